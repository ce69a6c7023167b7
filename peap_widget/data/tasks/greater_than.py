"""Greater-than on years: "The war lasted from the year 1732 to the year 17" -> a year > 32.

The counterfactual sets the start year's last two digits to "01". ``correct`` is YY+1 and
``incorrect`` is YY (so plain logit difference works); the task's own metric is the paper's
probability difference, sum p(year > YY) - sum p(year <= YY) over the two-digit tokens.
Schema (the paper's, with repeated words numbered): The, NOUN, lasted, from, the1, year1, XX1,
YY, to, the2, year2, XX2.
"""

from __future__ import annotations

import random

import torch

from ...errors import DatasetError
from ..schema import Schema
from .base import Task

NOUNS = ["war", "expedition", "drought", "reign", "journey", "siege", "project", "voyage",
         "festival", "famine", "strike", "pilgrimage", "construction", "trial", "rebellion"]
SCHEMA = ["The", "NOUN", "lasted", "from", "the1", "year1", "XX1", "YY", "to", "the2", "year2", "XX2"]


class YearProbDiff:
    """sum p(year > YY) - sum p(year <= YY) at the last token, with YY read off ``incorrect``."""

    __name__ = "year_prob_diff"

    def __init__(self, tokenizer):
        ids = []
        for y in range(100):
            enc = tokenizer(f"{y:02d}", add_special_tokens=False)["input_ids"]
            if len(enc) != 1:
                raise DatasetError(f"year_prob_diff needs every two-digit year to be one token; "
                                   f"{y:02d!r} is {len(enc)}")
            ids.append(enc[0])
        self.year_ids = torch.tensor(ids)
        self.year_of = {t: y for y, t in enumerate(ids)}

    def __call__(self, logits, correct, incorrect):
        yy = torch.tensor([self.year_of[int(t)] for t in incorrect], device=logits.device)
        p = logits.softmax(-1)[:, self.year_ids.to(logits.device)]             # [B, 100]
        above = torch.arange(100, device=logits.device)[None, :] > yy[:, None]
        return (p * above).sum(-1) - (p * ~above).sum(-1)


def greater_than(n: int = 200, seed: int = 0, nouns=NOUNS, centuries=range(11, 20)) -> Task:
    """``n`` greater-than examples (see the module docstring)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        noun, xx, yy = rng.choice(nouns), rng.choice(list(centuries)), rng.randint(2, 98)
        clean = f"The {noun} lasted from the year {xx}{yy:02d} to the year {xx}"
        corrupted = f"The {noun} lasted from the year {xx}01 to the year {xx}"
        # character spans, each covering its text and the space before it
        words = ["The", noun, "lasted", "from", "the", "year"]
        spans, pos = {}, 0
        for name, w in zip(SCHEMA[:6], words):
            start = pos
            pos = clean.index(w, pos) + len(w)
            spans[name] = [start, pos]
        spans["XX1"] = [pos, pos + 3]           # " 17"
        spans["YY"] = [pos + 3, pos + 5]        # "32"
        pos += 5
        for name, w in zip(["to", "the2", "year2", "XX2"], ["to", "the", "year", str(xx)]):
            start = pos
            pos = clean.index(w, pos) + len(w)
            spans[name] = [start, pos]
        records.append({"clean": clean, "corrupted": corrupted, "correct": f"{yy + 1:02d}",
                        "incorrect": f"{yy:02d}", "char_spans": spans})
    return Task("greater-than", Schema(SCHEMA), records, metric=YearProbDiff,
                description=__doc__.split("\n\n")[0])
