"""Schema suggesters: span annotations proposed by rules, input saliency or an LLM, for review
in the SchemaEditor (see `peap_widget.suggest.base` for the contract every suggester follows)."""

from .base import Progress, Suggester, Suggestion

__all__ = ["Progress", "Suggester", "Suggestion"]
from .llm import LLMSuggester, ProposedSchema, propose_schema  # noqa: E402,F401
from .llm_backends import CallableBackend, OpenAIBackend, TransformersBackend  # noqa: E402,F401
from .rules import RuleError, RuleTagger  # noqa: E402,F401
from .saliency import SaliencySuggester, TokenSaliency, token_saliency  # noqa: E402,F401
