"""A griffe extension for the API reference: show docstring examples as code.

The package's docstrings put doctests (``>>>`` lines, checked by tests/test_doctests.py) under an
``Example:`` heading or straight into a module's text. Markdown would read ``>>>`` as nested
quotes and ``x["key"]`` as a link, so every doctest block (a ``>>>`` line, its ``...``
continuations and its expected output, up to a blank line) is wrapped in a ``pycon`` code fence
here, and doctest directives (``# doctest: +SKIP``) are dropped from what is shown. The source
docstrings are not changed.
"""

from __future__ import annotations

import re

import griffe

_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")
# A Google-style section heading ("Example:", "Returns:"): its content must follow it directly,
# or griffe no longer reads it as a section.
_HEADING = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")


def fence_doctests(text: str) -> str:
    """``text`` with each doctest block inside a ```` ```pycon ```` fence at its own indent."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        before = next((prev for prev in reversed(out) if prev.strip()), "")
        shift = 0
        if not _HEADING.match(before):
            # a block indented under running text (a module docstring's example) moves out to
            # the text's indent, or Markdown would read the fence itself as indented code
            shift = max(0, len(indent) - (len(before) - len(before.lstrip())))
            indent = indent[shift:]
        if out and out[-1].strip() and not _HEADING.match(out[-1]):
            out.append("")   # a fence needs a blank line before it inside running text
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            body = lines[i]
            if body.lstrip().startswith((">>>", "...")):
                body = _DIRECTIVE.sub("", body)
            out.append(body.lstrip() if body[:shift].strip() else body[shift:])
            i += 1
        out.append(f"{indent}```")
        out.append("")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fences the doctest blocks of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
