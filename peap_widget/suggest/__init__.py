"""Schema suggesters: span annotations proposed by rules, input saliency or an LLM, for review
in the SchemaEditor (see `peap_widget.suggest.base` for the contract every suggester follows).

Example:
    >>> from peap_widget.suggest import rules
    >>> tagger = rules.IOI(model)                              # doctest: +SKIP
    >>> suggestion = tagger(records, tokens)                   # doctest: +SKIP
    >>> editor = pw.SchemaEditor(records, model=model, suggesters=[tagger])   # doctest: +SKIP
"""

from . import rules
from .base import Progress, Suggester, Suggestion
from .llm import LLMSuggester, ProposedSchema, propose_schema
from .llm_backends import CallableBackend, OpenAIBackend, TransformersBackend
from .rules import RuleError, RuleTagger
from .saliency import SaliencySuggester, TokenSaliency, token_saliency

__all__ = ["Progress", "Suggester", "Suggestion", "rules", "LLMSuggester", "ProposedSchema",
           "propose_schema", "CallableBackend", "OpenAIBackend", "TransformersBackend",
           "RuleError", "RuleTagger", "SaliencySuggester", "TokenSaliency", "token_saliency"]
