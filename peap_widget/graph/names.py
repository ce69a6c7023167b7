"""The graph's names, written and parsed in one place.

- A *component* writes to the residual stream: ``input``, ``a3.h4`` (layer 3, head 4), ``m3``
  (layer 3's MLP). A *slot* reads from it: a head's q, k or v input ``a3.h4<q>``, an MLP ``m3``,
  ``logits``.
- A *positional node* is a component or slot at a span: ``a3.h4@S2``, ``a3.h4<k>@S1``,
  ``logits@END``. Component names hold no ``@``, so the first ``@`` splits the span off (span
  names may hold anything).

Example:
    >>> split_node("a3.h4@S2")
    ('a3.h4', 'S2')
    >>> parse_component("a3.h4<k>")
    Component(kind='k', layer=3, head=4)
    >>> head_name(3, 4), slot_name(3, 4, "q"), mlp_name(0)
    ('a3.h4', 'a3.h4<q>', 'm0')
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import PeapError

#: a head's three inputs, in the order of the backward axis and of crossing rows
QKV = ("q", "k", "v")
#: component kinds `parse_component` returns (slots of a head: "q", "k", "v")
KINDS = ("input", "head", "mlp", "logits", *QKV)

_HEAD = re.compile(r"^a(\d+)\.h(\d+)$")
_SLOT = re.compile(r"^a(\d+)\.h(\d+)<([qkv])>$")
_MLP = re.compile(r"^m(\d+)$")
_LOOKS_LIKE = ("names look like 'input', 'a3.h4' (layer 3, head 4), 'm3' (layer 3's MLP), "
               "'logits', or a head's input 'a3.h4<q>' / 'a3.h4<k>' / 'a3.h4<v>'")


class Component(NamedTuple):
    """What a component or slot name says: ``kind`` (one of `KINDS`), ``layer`` and ``head``
    (None where the kind has none: ``input`` and ``logits`` have neither, an MLP no head)."""

    kind: str
    layer: int | None
    head: int | None


def head_name(layer: int, head: int) -> str:
    """``a{layer}.h{head}``.

    >>> head_name(0, 2)
    'a0.h2'
    """
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    """``m{layer}``."""
    return f"m{layer}"


def slot_name(layer: int, head: int, kind: str) -> str:
    """A head's q, k or v input: ``a{layer}.h{head}<{kind}>``."""
    return f"{head_name(layer, head)}<{kind}>"


def node_name(base: str, span: str) -> str:
    """A positional node: ``{base}@{span}`` (the inverse of `split_node`)."""
    return f"{base}@{span}"


def split_node(name: str, spans: list[str] | None = None) -> tuple[str, str | None]:
    """``"a3.h4@S2"`` -> ``("a3.h4", "S2")``; a name without a span (or ending in ``@``) gives
    span None. With ``spans``, a span that is not one of them raises `PeapError`.

    >>> split_node("a3.h4<k>@S1"), split_node("m0")
    (('a3.h4<k>', 'S1'), ('m0', None))
    >>> split_node("a3.h4@S9", ["S1", "S2"])
    Traceback (most recent call last):
    ...
    peap_widget.errors.PeapError: no span 'S9' in 'a3.h4@S9'; the spans are ['S1', 'S2']
    """
    if not isinstance(name, str):
        raise PeapError(f"a node name is a string like 'a3.h4@S2', got {type(name).__name__}")
    base, _, span = name.partition("@")
    if spans is not None and span and span not in spans:
        raise PeapError(f"no span {span!r} in {name!r}; the spans are {list(spans)}")
    return base, span or None


def split_slot(name: str) -> tuple[str, str | None]:
    """``"a3.h4<q>"`` -> ``("a3.h4", "q")``; a name without ``<...>`` gives kind None. Syntax
    only (the kind is not checked; `parse_component` checks everything).

    >>> split_slot("a3.h4<v>"), split_slot("m2")
    (('a3.h4', 'v'), ('m2', None))
    """
    base, sep, tail = name.partition("<")
    if not sep:
        return name, None
    return base, tail[:-1] if tail.endswith(">") else tail


def component_of(name: str) -> str:
    """The component a slot belongs to (a head's q/k/v input -> the head); other names as
    they are.

    >>> component_of("a3.h4<k>"), component_of("m1"), component_of("logits")
    ('a3.h4', 'm1', 'logits')
    """
    return split_slot(name)[0]


def parse_component(name: str) -> Component:
    """A component or slot name -> `Component` (kind, layer, head); `PeapError` for anything
    else (positional names too: `split_node` first).

    >>> parse_component("a3.h4"), parse_component("m2")
    (Component(kind='head', layer=3, head=4), Component(kind='mlp', layer=2, head=None))
    >>> parse_component("input").kind, parse_component("logits").kind
    ('input', 'logits')
    >>> parse_component("a3.h4@S2")
    Traceback (most recent call last):
    ...
    peap_widget.errors.PeapError: 'a3.h4@S2' is a positional node name; split its span off first (split_node)
    """
    if not isinstance(name, str):
        raise PeapError(f"a component name is a string ({_LOOKS_LIKE}), got {type(name).__name__}")
    if name in ("input", "logits"):
        return Component(name, None, None)
    if m := _HEAD.match(name):
        return Component("head", int(m.group(1)), int(m.group(2)))
    if m := _MLP.match(name):
        return Component("mlp", int(m.group(1)), None)
    if m := _SLOT.match(name):
        return Component(m.group(3), int(m.group(1)), int(m.group(2)))
    if "@" in name:
        raise PeapError(f"{name!r} is a positional node name; split its span off first "
                        "(split_node)")
    raise PeapError(f"{name!r} is not a component name: {_LOOKS_LIKE}")


def component_name(kind: str, layer: int | None = None, head: int | None = None) -> str:
    """The name `parse_component` reads back as (kind, layer, head).

    >>> component_name(*parse_component("a1.h0<q>"))
    'a1.h0<q>'
    """
    if kind in ("input", "logits"):
        return kind
    if kind == "head":
        return head_name(layer, head)
    if kind == "mlp":
        return mlp_name(layer)
    if kind in QKV:
        return slot_name(layer, head, kind)
    raise PeapError(f"unknown component kind {kind!r}; kinds are {KINDS}")
