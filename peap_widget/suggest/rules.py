"""Rule-based schema suggester: each span's *start* found by a small declarative rule.

Spans in PEAP cover the prompt contiguously in schema order (docs/numbers.md), so a schema
is fixed by where each span starts. A `RuleTagger` holds one rule per span, in schema order;
each rule looks at the clean text and returns the character where its span starts, searching
from where the previous rule's match ended (``after=True``, the default) or from the start of
the prompt. The character starts become character ranges ``[start_i, start_(i+1))`` and go
through the same mapping the task loader uses (`peap_widget.data.tasks.base.token_spans`: a token
belongs to the span holding its first non-space character), so a rule tagger and a task's
``char_spans`` agree token for token.

Rules:
    `start`         the prompt's first character (the span may be empty)
    `word`          the n-th whole word from a list (``"and"``, ``["the", "a"]``) or matching
                    a regular expression (``pattern=r"[A-Z][a-z]+"``)
    `regex`         the n-th match of a regular expression (or of one of its groups)
    `next_word`     the n-th word after the previous match, whatever it is
    `last_token`    the prompt's last token (the last span must be exactly that)
and checks between matched words: `same` (e.g. S1 and S2 are the same name), `differ`.

Example (the built-in IOI schema, ABBA order, in a few lines):
    >>> import peap_widget as pw
    >>> from peap_widget.suggest import rules as R
    >>> ioi = R.RuleTagger([
    ...     R.start("prefix"), R.word("IO", R.NAMES), R.word("and", "and"),
    ...     R.word("S1", R.NAMES), R.next_word("S1+1"), R.next_word("action1"),
    ...     R.word("S2", R.NAMES), R.next_word("action2"), R.last_token("to"),
    ... ], tokenizer=pw.models.load("toy-ioi"), checks=[R.same("S1", "S2"), R.differ("IO", "S1")])
    >>> sug = ioi([{"clean": "When Mary and John went to the store , John gave a book to"},
    ...            {"clean": "When Mary and John went to the store , Kate gave a book to"}])
    >>> sug.spans[0]["S2"], sug.spans[0]["to"], sug.spans[1]
    ((9, 10), (13, 14), None)
    >>> sug.failed[1]
    "span 'S1' matched 'John' and 'S2' matched 'Kate': they should be the same"

`IOI` / `GREATER_THAN` (functions of a tokenizer) build the built-in schemas this way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import PeapError
from ..data.schema import Schema
from ..data.tasks.base import token_spans
from ..data.tasks.ioi import NAMES as IOI_NAMES
from .base import Progress, Suggestion

#: the IOI generator's names (`peap_widget.data.tasks.ioi.NAMES`), a ready word list for `word`
NAMES = tuple(IOI_NAMES)
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")   # words, and punctuation marks as words


class RuleError(PeapError):
    """A rule that can never work (bad regular expression, empty word list, unknown span...);
    examples a good rule does not match are *not* errors: they land in ``Suggestion.failed``."""


class NoMatch(Exception):
    """A rule found nothing in one example (the message says what was looked for)."""


@dataclass
class Rule:
    """One span: ``name`` and ``find(text, cursor, matched) -> (start, end)`` giving the span's
    first character and where the next rule's search begins. ``matched`` maps earlier span
    names to the text their rule matched (for checks)."""

    name: str
    find: Callable[[str, int, dict], tuple[int, int]]
    describe: str = ""
    last: bool = False   # the last-token rule (resolved in tokens, not characters)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _nth(matches, n: int, what: str, scope: str):
    """The n-th of an iterator of re.Match objects, or NoMatch counting how many there were."""
    seen = 0
    for m in matches:
        seen += 1
        if seen == n:
            return m
    raise NoMatch(f"no {_ordinal(n)} {what} {scope} (found {seen})")


def _check_n(n, name):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RuleError(f"span {name!r}: n counts occurrences from 1, got {n!r}")


def _compile(pattern: str, name: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise RuleError(f"span {name!r}: bad regular expression {pattern!r}: {err}") from None


def start(name: str) -> Rule:
    """The span starts at the prompt's first character (so it is empty when the next span
    matches there too, e.g. an IOI prompt without a prefix)."""
    return Rule(name, lambda text, cursor, matched: (0, 0), "the start of the prompt")


def word(name: str, words: str | Sequence[str] | None = None, n: int = 1, *,
         pattern: str | None = None, after: bool = True) -> Rule:
    """The span starts at the ``n``-th whole word that is in ``words`` (a word or a list) or
    matches ``pattern`` (a regular expression matched against whole words), counted from the
    previous match (``after=True``) or from the start of the prompt."""
    _check_n(n, name)
    if (words is None) == (pattern is None):
        raise RuleError(f"span {name!r}: give either words (a word or a list) or pattern")
    if words is not None:
        ws = [words] if isinstance(words, str) else list(words)
        if not ws or not all(isinstance(w, str) and w.strip() for w in ws):
            raise RuleError(f"span {name!r}: words must be a non-empty list of non-empty strings, "
                            f"got {words!r}")
        phrases = [w for w in ws if len(w.split()) > 1 or not _WORD.fullmatch(w.strip())]
        if phrases:
            raise RuleError(f"span {name!r}: {phrases[0]!r} is not one word; use regex(...) for "
                            "a phrase or a part of a word")
        wanted = {w.strip() for w in ws}
        what = (f"{ws[0]!r}" if len(ws) == 1
                else f"word of {sorted(wanted)[:3]}... ({len(wanted)} words)")
        accept = wanted.__contains__
    else:
        rx = _compile(pattern, name)
        accept, what = (lambda w: rx.fullmatch(w) is not None), f"word matching {pattern!r}"

    def find(text, cursor, matched):
        lo = cursor if after else 0
        hits = (m for m in _WORD.finditer(text, lo) if accept(m.group()))
        m = _nth(hits, n, what, "after the previous span" if after else "in the prompt")
        matched[name] = m.group()
        return m.start(), m.end()

    return Rule(name, find, f"the {_ordinal(n)} {what}")


def regex(name: str, pattern: str, n: int = 1, group: int | str = 0, *,
          after: bool = True) -> Rule:
    """The span starts where ``group`` of the ``n``-th match of ``pattern`` starts (e.g. the
    last two digits of a year: ``regex("YY", r"\\d\\d(\\d\\d)", group=1)``)."""
    _check_n(n, name)
    rx = _compile(pattern, name)
    if isinstance(group, int) and not 0 <= group <= rx.groups or (
            isinstance(group, str) and group not in rx.groupindex):
        raise RuleError(f"span {name!r}: the pattern {pattern!r} has no group {group!r}")

    def find(text, cursor, matched):
        m = _nth(rx.finditer(text, cursor if after else 0), n, f"match of {pattern!r}",
                 "after the previous span" if after else "in the prompt")
        if m.start(group) < 0:
            raise NoMatch(f"group {group!r} of {pattern!r} took no part in the match")
        matched[name] = m.group(group)
        return m.start(group), m.end(group)

    return Rule(name, find, f"the {_ordinal(n)} match of {pattern!r}")


def next_word(name: str, n: int = 1) -> Rule:
    """The span starts at the ``n``-th word (or punctuation mark) after the previous match."""
    _check_n(n, name)

    def find(text, cursor, matched):
        m = _nth(_WORD.finditer(text, cursor), n, "word", "after the previous span")
        matched[name] = m.group()
        return m.start(), m.end()

    return Rule(name, find, f"the {_ordinal(n)} word after the previous span")


_LAST = -1   # start marker: "the last token" is resolved in tokens, not characters


def last_token(name: str) -> Rule:
    """The span is the prompt's last token (every schema's last span is exactly that)."""
    return Rule(name, lambda text, cursor, matched: (_LAST, len(text)), "the last token", True)


@dataclass
class Check:
    """A condition on the words two rules matched; a failing example is left out."""

    a: str
    b: str
    equal: bool

    def __call__(self, matched: dict) -> str | None:
        x, y = matched.get(self.a), matched.get(self.b)
        if (x == y) != self.equal:
            return (f"span {self.a!r} matched {x!r} and {self.b!r} matched {y!r}: "
                    f"they should be {'the same' if self.equal else 'different'}")
        return None


def same(a: str, b: str) -> Check:
    """Spans ``a`` and ``b`` must have matched the same word (IOI: S1 and S2)."""
    return Check(a, b, True)


def differ(a: str, b: str) -> Check:
    """Spans ``a`` and ``b`` must have matched different words (IOI: IO and S1)."""
    return Check(a, b, False)


class _OffsetsFromTokens:
    """Stands in for a tokenizer in `token_spans` when only token strings are known: each
    token's characters are found in the text in order (BPE/SentencePiece space markers read as
    spaces); tokens not found in the text (special tokens) get empty offsets."""

    MARKERS = {"\u0120": " ", "\u2581": " ", "\u010a": "\n"}

    def __init__(self, tokens: Sequence[str]):
        self.tokens = tokens

    def __call__(self, text, return_offsets_mapping=True):
        offsets, pos = [], 0
        for tok in self.tokens:
            piece = "".join(self.MARKERS.get(c, c) for c in str(tok)).removeprefix("##").strip()
            at = text.find(piece, pos) if piece else -1
            if at < 0:
                offsets.append((pos, pos))
                continue
            offsets.append((at, at + len(piece)))
            pos = at + len(piece)
        return {"offset_mapping": offsets}


@dataclass
class RuleTagger:
    """A suggester (see `peap_widget.suggest.base`) from one `Rule` per span in schema order.

    ``tokenizer``: a tokenizer with offsets, or a `peap_widget.Model` (its tokenizer); without
    one, characters are matched to the token strings the suggester is given. ``checks``:
    `same` / `differ` conditions. Examples a rule does not match, or whose check fails, are
    left out (``spans[i] = None``) with the reason in ``failed[i]``.
    """

    rules: Sequence[Rule]
    tokenizer: object = None
    checks: Sequence[Check] = ()
    name: str = "rules"
    schema: Schema = field(init=False)

    def __post_init__(self):
        self.rules = list(self.rules)
        bad = [r for r in self.rules if not isinstance(r, Rule)]
        if bad:
            raise RuleError(f"a RuleTagger takes rules made by start, word, regex, next_word or "
                            f"last_token; got {type(bad[0]).__name__}")
        try:
            self.schema = Schema([r.name for r in self.rules])
        except PeapError as err:
            raise RuleError(f"the rules' span names do not make a schema: {err}") from None
        if not self.rules[-1].last or any(r.last for r in self.rules[:-1]):
            raise RuleError(f"the last span (here {self.rules[-1].name!r}), and only it, must be "
                            "last_token(...): every schema's last span holds exactly the last "
                            "token")
        names = set(self.schema.spans)
        for c in self.checks:
            unknown = {c.a, c.b} - names
            if unknown:
                raise RuleError(f"a check names spans {sorted(unknown)} that no rule defines "
                                f"(spans: {list(self.schema.spans)})")
        tok = getattr(self.tokenizer, "tokenizer", self.tokenizer)
        self._tok = tok

    def tag(self, text: str, tokens: Sequence[str] | None = None, example: int | None = None
            ) -> dict[str, tuple[int, int]]:
        """Token spans ``{name: (start, end)}`` of one prompt; raises `NoMatch` naming the span
        whose rule found nothing, or a `PeapError` from the token mapping."""
        if not isinstance(text, str) or not text:
            raise NoMatch("the prompt is empty or not text")
        tok = self._tok if self._tok is not None else _OffsetsFromTokens(tokens or [])
        offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
        if tokens is not None and len(offsets) != len(tokens):
            raise NoMatch(f"the tokenizer makes {len(offsets)} tokens of the prompt but "
                          f"{len(tokens)} token strings were given (another tokenizer?)")
        if not offsets:
            raise NoMatch("the prompt has no tokens")
        starts, cursor, matched = [], 0, {}
        for rule in self.rules:
            try:
                s, cursor = rule.find(text, cursor, matched)
            except NoMatch as err:
                raise NoMatch(f"span {rule.name!r} ({rule.describe}): {err}") from None
            if s == _LAST:
                s = offsets[-1][0]
            if starts and s < starts[-1][1]:
                raise NoMatch(f"span {rule.name!r} would start at character {s}, before span "
                              f"{starts[-1][0]!r} (character {starts[-1][1]})")
            starts.append((rule.name, s))
        for check in self.checks:
            problem = check(matched)
            if problem:
                raise NoMatch(problem)
        bounds = [s for _, s in starts] + [len(text)]
        chars = {n: [bounds[i], bounds[i + 1]] for i, (n, _) in enumerate(starts)}
        mapped = token_spans(tok, text, chars, example)
        spans = {n: tuple(mapped[n]) for n in self.schema.spans}
        # the mapping joins special tokens to neighbours: the schema's rules still hold?
        self.schema.validate(spans, len(offsets), example=example)
        return spans

    def __call__(self, examples: Sequence[Mapping], tokens: Sequence[Sequence[str]] | None = None,
                 *, progress: Progress | None = None) -> Suggestion:
        """Tag every example's ``clean`` prompt (see `peap_widget.suggest.base`)."""
        if tokens is not None and len(tokens) != len(examples):
            raise RuleError(f"{len(tokens)} token lists for {len(examples)} examples")
        spans, failed = [], {}
        for i, ex in enumerate(examples):
            text = ex.get("clean") if isinstance(ex, Mapping) else None
            try:
                spans.append(self.tag(text, None if tokens is None else tokens[i], example=i))
            except (NoMatch, PeapError) as err:
                spans.append(None)
                failed[i] = str(err)
            if progress is not None:
                progress(i + 1, len(examples), {"failed": len(failed)})
        return Suggestion(list(self.schema.spans), spans, source=self.name, failed=failed,
                          info={"rules": {r.name: r.describe for r in self.rules}})


# --- the built-in schemas ---------------------------------------------------------------------


def IOI(tokenizer=None, order: str = "ABBA", names: Sequence[str] = NAMES) -> RuleTagger:
    """The built-in IOI schemas (`peap_widget.data.tasks.ioi`): ``order="ABBA"`` (IO first),
    ``"BABA"`` (S1 first) or ``"both"`` (first two names ``N1``, ``N2``); the checks leave out
    prompts of the other order."""
    first, second = {"ABBA": ("IO", "S1"), "BABA": ("S1", "IO"), "both": ("N1", "N2")}[order]
    names = [n.strip() for n in names]
    checks = [differ(first, second)] + ([] if order == "both" else [same("S1", "S2")])
    return RuleTagger([
        start("prefix"), word(first, names), word("and", "and"), word(second, names),
        next_word(f"{second}+1"), next_word("action1"), word("S2", names),
        next_word("action2"), last_token("to"),
    ], tokenizer, checks, name=f"rules:ioi-{order.lower()}")


def GREATER_THAN(tokenizer=None) -> RuleTagger:
    """The built-in greater-than schema (`peap_widget.data.tasks.greater_than`)."""
    return RuleTagger([
        word("The", "The"), next_word("NOUN"), word("lasted", "lasted"), word("from", "from"),
        word("the1", "the"), word("year1", "year"), regex("XX1", r"\d\d(?=\d\d)"),
        regex("YY", r"\d\d"), word("to", "to"), word("the2", "the"), word("year2", "year"),
        last_token("XX2"),
    ], tokenizer, name="rules:greater-than")


__all__ = ["RuleTagger", "Rule", "Check", "RuleError", "NoMatch", "start", "word", "regex",
           "next_word", "last_token", "same", "differ", "IOI", "GREATER_THAN", "NAMES"]
