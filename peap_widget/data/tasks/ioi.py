"""Indirect object identification with variable-length templates.

"When Mary and John went to the store, John gave a drink to" -> " Mary". Prefixes, places and
objects have different lengths and there are several sentence shapes, so examples differ in
length and only a span schema lines them up. Counterfactuals (ABC) keep the template and put
three fresh names in the IO, S1 and S2 places.

Schemas: ``order="ABBA"`` (IO first) uses the PEAP paper's human schema
``prefix, IO, and, S1, S1+1, action1, S2, action2, to``; ``"BABA"`` mirrors it
(``prefix, S1, and, IO, IO+1, ...``); ``"both"`` mixes the two orders and so names the first two
name spans by position: ``prefix, N1, and, N2, N2+1, action1, S2, action2, to``.
"""

from __future__ import annotations

import random

from ..schema import Schema
from .base import Task, char_spans

NAMES = (
    "Mary John Tom James Sarah David Paul Anna Lisa Mark Kate Emma Peter Jack Alice Bob Michael "
    "Daniel Laura Rachel Sam Ben Amy Ryan Chris Steve Linda Susan Karen Jason Eric Adam Alex Dan "
    "Joe Tim Kevin Brian Andrew Rose Grace Jane Lucy George Henry Frank Robert Richard Thomas "
    "William Charles Joseph Matthew Nick Max Luke Julia Victoria Helen Anne"
).split()

PREFIXES = ["", "When", "Then", "Afterwards", "Later that day", "After the long meeting",
            "On a cold winter morning", "While it was raining"]
SHAPES = [  # (S1+1 word, rest of action1 before the place, joiner after the place, action2 verb)
    ("went", "to", ",", "gave"),
    ("were", "working at", ".", "handed"),
    ("had", "a long day at", ",", "passed"),
    ("got", "a drink at", ",", "gave"),
]
PLACES = ["the store", "the school", "the park", "the train station", "the old library",
          "the small cafe by the river", "the hospital", "the museum"]
OBJECTS = ["a drink", "a book", "a red ball", "the keys", "some flowers", "a long letter",
           "an apple", "the big green bag"]

SCHEMAS = {
    "ABBA": ["prefix", "IO", "and", "S1", "S1+1", "action1", "S2", "action2", "to"],
    "BABA": ["prefix", "S1", "and", "IO", "IO+1", "action1", "S2", "action2", "to"],
    "both": ["prefix", "N1", "and", "N2", "N2+1", "action1", "S2", "action2", "to"],
}


def _prompt(schema, prefix, first, second, s2, shape, place, obj):
    s1p1, act, joiner, verb = shape
    return char_spans([
        (schema[0], prefix), (schema[1], first), (schema[2], "and"), (schema[3], second),
        (schema[4], s1p1), (schema[5], f"{act} {place}{joiner}".replace(" ,", ",").replace(" .", ".")),
        (schema[6], s2), (schema[7], f"{verb} {obj}"), (schema[8], "to"),
    ])


def ioi(n: int = 200, order: str = "ABBA", seed: int = 0, names=NAMES, prefixes=PREFIXES,
        places=PLACES, objects=OBJECTS, shapes=SHAPES) -> Task:
    """``n`` IOI examples (see the module docstring). Answers are the names themselves; for a
    BPE tokenizer pass names with a leading space, e.g. ``names=[" " + n for n in NAMES]``,
    where each must be one token (`Task.dataset` says which is not)."""
    if order not in SCHEMAS:
        raise ValueError(f"order must be one of {sorted(SCHEMAS)}, got {order!r}")
    if len(names) < 5:
        raise ValueError("IOI needs at least 5 names (two in the prompt, three fresh ones)")
    rng = random.Random(seed)
    schema = SCHEMAS[order]
    records = []
    for i in range(n):
        io, s, a, b, c = rng.sample(list(names), 5)
        abba = order == "ABBA" or (order == "both" and i % 2 == 0)
        parts = (rng.choice(prefixes), rng.choice(shapes), rng.choice(places), rng.choice(objects))
        prefix, shape, place, obj = parts
        first, second = (io, s) if abba else (s, io)
        cf_first, cf_second = (a, b) if abba else (b, a)
        clean, spans = _prompt(schema, prefix, first.strip(), second.strip(), s.strip(), shape, place, obj)
        corrupted, _ = _prompt(schema, prefix, cf_first.strip(), cf_second.strip(), c.strip(), shape,
                               place, obj)
        records.append({"clean": clean, "corrupted": corrupted, "correct": io, "incorrect": s,
                        "char_spans": spans, "template": "ABBA" if abba else "BABA"})
    return Task(f"ioi-{order.lower()}" if order != "ABBA" else "ioi", Schema(schema), records,
                description=__doc__.split("\n\n")[0], answer_space=True)
