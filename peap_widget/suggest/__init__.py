"""Schema suggesters: span annotations proposed by rules, input saliency or an LLM, for review
in the SchemaEditor (see `peap_widget.suggest.base` for the contract every suggester follows)."""

from .base import Progress, Suggester, Suggestion

__all__ = ["Progress", "Suggester", "Suggestion"]
