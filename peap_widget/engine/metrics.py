"""Task metrics m(logits) per example, at each example's last token.

A metric takes ``(logits, correct, incorrect)`` with ``logits`` [B, vocab] at the last token and
``correct`` / ``incorrect`` [B] token ids, and returns [B] values. Pass a name or your own callable.

Example:
    >>> def margin(logits, correct, incorrect):   # a custom metric: log-prob difference
    ...     lp = logits.log_softmax(-1)
    ...     return lp.gather(-1, correct[:, None])[:, 0] - lp.gather(-1, incorrect[:, None])[:, 0]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import PeapError

Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def logit_diff(logits: torch.Tensor, correct: torch.Tensor,
               incorrect: torch.Tensor) -> torch.Tensor:
    """logit[correct] - logit[incorrect] (the default metric, docs/numbers.md)."""
    return logits.gather(-1, correct[:, None])[:, 0] - logits.gather(-1, incorrect[:, None])[:, 0]


def prob_diff(logits: torch.Tensor, correct: torch.Tensor,
              incorrect: torch.Tensor) -> torch.Tensor:
    """p[correct] - p[incorrect] under the softmax of the logits."""
    p = logits.softmax(-1)
    return p.gather(-1, correct[:, None])[:, 0] - p.gather(-1, incorrect[:, None])[:, 0]


METRICS: dict[str, Metric] = {"logit_diff": logit_diff, "prob_diff": prob_diff}


def resolve_metric(metric: str | Metric) -> tuple[str, Metric]:
    """(name, function) for a metric name or callable."""
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric in METRICS:
        return metric, METRICS[metric]
    raise PeapError(f"unknown metric {metric!r}; use one of {sorted(METRICS)} or a callable "
                    "(logits, correct, incorrect) -> per-example values")


def last_token_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, T, V] -> [B, V] at each example's last real token (right padding)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), lengths - 1]
