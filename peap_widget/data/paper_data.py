"""The PEAP paper's released data files (Haklay et al. 2025, github.com/technion-cs-nlp/PEAP):
``data/<model>/<task>/{human_baseline,agent,agent_with_mask}/*.csv``, read as a clean file and
its counterfactual file.

Their form differs from our PEAP CSV (`Dataset.from_peap_csv`) in four ways:

- the answers are ``correct_token`` / ``wrong_token`` (with their leading space, e.g. " Laura");
  greater-than files have only ``label``, the start year's last two digits ("53"), read here as
  ``incorrect = label`` and ``correct = label + 1`` (peap_widget's greater-than convention, so
  `pw.tasks.greater_than`'s year metric applies);
- they carry columns that are not spans: ``prompt_id``, ``label``, ``split`` (circuit / eval /
  ablation), ``top_answer``, ``top_answer_prob``, ``correct_prob``, ``wrong_prob``,
  ``S1_token``, ``S2_token``, ``IO_token``, WinoBias's ``id``, ``pair_id``,
  ``correct_proffesion_idx``, ``is_model_correct``, and sometimes a leading unnamed index column
  (files written with pandas' index); they are kept as record metadata;
- span columns hold each span's first token index, and sit before ``length`` (human baseline)
  or after the metadata (agent files): here they are every other column, in file order, unless
  ``spans=[...]`` names them;
- their pipeline prepends a BOS token: ``length`` and the span indices count it, and the first
  span starts at 1 (the BOS belongs to no span there). The offset is detected per file by
  comparing ``length`` with the tokenizer's own encoding (1 for GPT-2-style tokenizers that add
  no BOS, 0 for tokenizers that add it themselves), checked on every row, and reported. Where
  the tokenizer keeps a BOS at position 0, it gets its own first span (``bos_span="BOS"``), or
  joins the first span with ``bos_span=None``.

Every problem raises `DatasetError` / `SchemaError` naming the file, the line and the column.

Example:
    >>> ds = Dataset.from_peap_paper("data/gpt2/ioi_ABBA/agent/IOI_data_clean.csv",
    ...                              "data/gpt2/ioi_ABBA/agent/IOI_data_counter_abc.csv",
    ...                              model, split="circuit")            # doctest: +SKIP
    >>> print(ds.paper_report)                                          # doctest: +SKIP
    IOI_data_clean.csv + IOI_data_counter_abc.csv: 468 rows, 42 kept (split='circuit'); ...
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DatasetError, PeapError, SchemaError
from .schema import Schema, ranges_from_starts

if TYPE_CHECKING:
    from .dataset import Dataset, TokenizerSource

#: columns of the paper's files that are not spans (kept as metadata)
META_COLUMNS = ("prompt_id", "id", "pair_id", "label", "split", "top_answer", "top_answer_prob",
                "correct_prob", "wrong_prob", "S1_token", "S2_token", "IO_token",
                "correct_proffesion_idx", "is_model_correct")
#: role -> the paper's column name
ROLES = {"prompt": "prompt", "length": "length", "correct": "correct_token",
         "incorrect": "wrong_token", "label": "label"}


@dataclass
class PaperTable:
    """One CSV file as the paper wrote it: header, rows (dicts of strings) and the line each
    row starts on (1 is the header)."""

    path: str
    header: list[str]
    rows: list[dict[str, str]]
    lines: list[int]

    def where(self, k: int, column: str | None = None) -> str:
        col = "" if column is None else f", column {column!r}"
        return f"{self.path}, line {self.lines[k]}{col}"


@dataclass
class PaperReport:
    """What `load_peap_paper` found and did: shown by ``print(ds.paper_report)``."""

    clean: str
    counterfactual: str | None
    rows: int
    kept: int
    bos_offset: int
    bos: str
    spans: list[str]
    answers: str
    roles: dict[str, str]
    metadata: list[str] = field(default_factory=list)
    split: object = None

    def __str__(self) -> str:
        files = Path(self.clean).name + (f" + {Path(self.counterfactual).name}"
                                         if self.counterfactual else "")
        kept = f", {self.kept} kept (split={self.split!r})" if self.split is not None else ""
        shift = ("length and span indices counted a BOS token: shifted by -1" if self.bos_offset
                 else "length and span indices used as they are")
        return (f"{files}: {self.rows} rows{kept}; BOS offset {self.bos_offset} ({shift}); "
                f"{self.bos}; spans {self.spans}; answers from {self.answers}; "
                f"metadata {self.metadata}")


def read_table(path) -> PaperTable:
    """Read a CSV with the standard csv module, keeping every field as written (leading spaces
    of answers included) and each row's line number."""
    p = str(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise DatasetError(f"{p} is empty: the paper's files start with a header line") from None
            rows, lines, line = [], [], reader.line_num
            for values in reader:
                start, line = line + 1, reader.line_num
                if not values:                    # a blank line
                    continue
                if len(values) != len(header):
                    raise DatasetError(f"{p}, line {start}: {len(values)} fields but the header "
                                       f"has {len(header)} ({header})")
                rows.append(dict(zip(header, values)))
                lines.append(start)
    except UnicodeDecodeError as err:
        raise DatasetError(f"{p} is not UTF-8 text: byte {err.start} is "
                           f"{err.object[err.start:err.start + 1]!r}") from None
    except csv.Error as err:
        raise DatasetError(f"{p} is not a well-formed CSV: {err}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {p}: {err.strerror or err}") from None
    dup = sorted({c for c in header if header.count(c) > 1 and not _is_index(c)})
    if dup:
        raise DatasetError(f"{p}: the header repeats the column(s) {dup}")
    if not rows:
        raise DatasetError(f"{p} has a header but no rows")
    return PaperTable(p, header, rows, lines)


def _is_index(column: str) -> bool:
    return column == "" or column.startswith("Unnamed:")


def _int(table: PaperTable, k: int, column: str, what: str) -> int:
    value = table.rows[k][column].strip()
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{table.where(k, column)}: {value!r} is not an integer ({what})") from None


def _resolve_roles(table: PaperTable, columns: Mapping[str, str] | None, answers: str):
    roles = dict(ROLES)
    for role, col in (columns or {}).items():
        if role not in ROLES:
            raise DatasetError(f"columns= knows the roles {sorted(ROLES)}, not {role!r}")
        roles[role] = col
    if answers == "auto":
        has_tokens = roles["correct"] in table.header and roles["incorrect"] in table.header
        answers = "tokens" if has_tokens else "greater_than" if roles["label"] in table.header else ""
        if not answers:
            raise DatasetError(f"{table.path}: no answer columns: it needs {roles['correct']!r} and "
                               f"{roles['incorrect']!r} (or {roles['label']!r} for greater-than); "
                               f"columns: {table.header}; name yours with columns="
                               "{'correct': ..., 'incorrect': ...}")
    if answers not in ("tokens", "greater_than"):
        raise DatasetError(f"answers must be 'auto', 'tokens' or 'greater_than', got {answers!r}")
    need = ["prompt", "length"] + (["correct", "incorrect"] if answers == "tokens" else ["label"])
    for role in need:
        if roles[role] not in table.header:
            raise DatasetError(f"{table.path}: no column {roles[role]!r} ({role}); columns: "
                               f"{table.header}; name it with columns={{{role!r}: '<column>'}}")
    used = {roles[r] for r in need}
    return roles, answers, used


def _span_columns(table: PaperTable, spans, used, ignore) -> tuple[list[str], list[str]]:
    """(span columns, metadata columns)."""
    others = [c for c in table.header if c not in used and not _is_index(c)]
    if spans is not None:
        names = list(spans)
        missing = [c for c in names if c not in table.header]
        if missing:
            raise DatasetError(f"{table.path}: no column for the span(s) {missing}; columns: "
                               f"{table.header}")
        return names, [c for c in others if c not in names]
    meta = [c for c in others if c in META_COLUMNS or c in ignore]
    names = [c for c in others if c not in meta]
    for c in names:                       # a span column holds an integer in every row
        for k, row in enumerate(table.rows):
            try:
                int(row[c].strip())
            except ValueError:
                raise DatasetError(
                    f"{table.where(k, c)}: {row[c]!r} is not a token index, and {c!r} is not a "
                    f"known metadata column of the paper's files; list the span columns with "
                    f"spans=[...] or pass ignore=[{c!r}]") from None
    if not names:
        raise DatasetError(f"{table.path}: no span columns found (columns: {table.header})")
    return names, meta


def _greater_than_answers(table, k, column) -> tuple[str, str]:
    raw = table.rows[k][column].strip()
    if not raw.isdigit() or int(raw) > 98:
        raise DatasetError(f"{table.where(k, column)}: greater-than label {raw!r} must be the start "
                           "year's last two digits, 00-98 (correct = label + 1)")
    yy = int(raw)
    return f"{yy + 1:02d}", f"{yy:02d}"


def load_peap_paper(clean_csv: str | Path, counterfactual_csv: str | Path,
                    model: TokenizerSource, *, spans: Sequence[str] | None = None,
                    answers: str = "auto", columns: Mapping[str, str] | None = None,
                    bos_offset: int | str = "auto", bos_span: str | None = "BOS",
                    split: str | Sequence[str] | None = None, ignore: Sequence[str] = ()) -> Dataset:
    """A `Dataset` from one of the paper's clean files and its counterfactual file (row k of
    one pairs with row k of the other, as in the paper's code; ``counterfactual_csv=None`` reads
    the clean file alone).

    - ``spans``: the span columns, in order (default: every column that is not a role, a known
      metadata column (`META_COLUMNS`), an index column or in ``ignore``, in file order; each
      must hold integers);
    - ``answers``: ``"tokens"`` (``correct_token`` / ``wrong_token``), ``"greater_than"``
      (``label`` = YY: correct YY+1, incorrect YY) or ``"auto"`` (tokens when present);
    - ``columns``: other names for the roles ``prompt``, ``length``, ``correct``, ``incorrect``,
      ``label``;
    - ``bos_offset``: how many leading tokens the file counts that this tokenizer does not
      produce: ``"auto"`` (detected: 1 or 0, the same on every row), or ``0`` / ``1``;
    - ``bos_span``: the name of the span holding a BOS token the tokenizer puts at position 0
      where the file's spans start at 1, or ``None`` to put it into the first span;
    - ``split``: keep only rows whose ``split`` column is this value (or one of these values).

    The result has ``ds.paper_report`` (a `PaperReport`: offset, spans, roles, rows kept).
    """
    from .dataset import Dataset, tokenizer_of

    tok = tokenizer_of(model)
    clean = read_table(clean_csv)
    cf = read_table(counterfactual_csv) if counterfactual_csv is not None else None
    roles, answers, used = _resolve_roles(clean, columns, answers)
    names, meta = _span_columns(clean, spans, used, set(ignore))
    if cf is not None:
        _check_pair(clean, cf, roles)
    keep = _rows_in_split(clean, split)
    offset = _detect_offset(clean, keep, roles["length"], roles["prompt"], tok, bos_offset)
    records = [_paper_record(clean, cf, k, roles, names, meta, answers, offset) for k in keep]
    with_bos = _with_bos(clean, records, names, bos_span)
    schema_names = ([bos_span] if with_bos and bos_span is not None else []) + names
    try:
        schema = Schema(schema_names)
    except SchemaError as err:
        raise SchemaError(f"{clean.path}: {err.args[0]}", rule=err.rule) from None
    for rec in records:
        _set_spans(clean, rec, schema, schema_names, names, with_bos, bos_span)
    rows = [r.pop("_row") for r in records]
    try:
        ds = Dataset.from_records(records, tok, schema=schema)
    except PeapError as err:
        raise _at_row(err, clean, cf, rows, roles) from None
    ds.paper_report = PaperReport(
        clean.path, cf.path if cf else None, len(clean.rows), len(keep), offset,
        (f"the tokenizer's BOS token at position 0 is span {bos_span!r}" if with_bos and bos_span
         else f"the tokenizer's BOS token at position 0 joins span {names[0]!r}" if with_bos
         else "no BOS token in the spans"),
        names, "correct_token/wrong_token" if answers == "tokens" else "label (greater-than)",
        {r: roles[r] for r in ("prompt", "length") + (("correct", "incorrect") if answers ==
                                                        "tokens" else ("label",))},
        meta, split)
    return ds


def _rows_in_split(clean: PaperTable, split) -> list[int]:
    """The rows to read: all, or those whose ``split`` column is (one of) ``split``."""
    keep = list(range(len(clean.rows)))
    if split is None:
        return keep
    if "split" not in clean.header:
        raise DatasetError(f"{clean.path}: split={split!r} but the file has no 'split' column")
    wanted = {split} if isinstance(split, str) else set(split)
    keep = [k for k in keep if clean.rows[k]["split"].strip() in wanted]
    if not keep:
        found = sorted({r["split"] for r in clean.rows})
        raise DatasetError(f"{clean.path}: no row has split in {sorted(wanted)} (found {found})")
    return keep


def _paper_record(clean: PaperTable, cf: PaperTable | None, k: int, roles, names, meta,
                  answers: str, offset: int) -> dict:
    """Row ``k`` as a record, with its length and span starts in this tokenizer's positions
    (``_length``, ``_starts``) and its row (``_row``) kept aside for the checks that follow."""
    row = clean.rows[k]
    length = _int(clean, k, roles["length"], "the prompt's token count") - offset
    starts = [_int(clean, k, c, "a span's first token index") - offset for c in names]
    if starts[0] not in (0, 1):
        raise DatasetError(f"{clean.where(k, names[0])}: the first span starts at token "
                           f"{starts[0] + offset}; the paper's first span starts right after "
                           f"the BOS token ({offset}, or 0 with bos_offset=0)")
    rec = {"clean": row[roles["prompt"]], "_length": length, "_starts": starts, "_row": k}
    if answers == "tokens":
        rec["correct"], rec["incorrect"] = row[roles["correct"]], row[roles["incorrect"]]
    else:
        rec["correct"], rec["incorrect"] = _greater_than_answers(clean, k, roles["label"])
    if cf is not None:
        rec["corrupted"] = cf.rows[k][roles["prompt"]]
    rec.update({c: row[c] for c in meta})
    return rec


def _with_bos(clean: PaperTable, records: list[dict], names, bos_span) -> bool:
    """Whether the first span starts after a BOS token on every row (it must be every row or
    none), and ``bos_span`` is usable as its span's name."""
    lead = {r["_starts"][0] for r in records}
    if lead == {0, 1}:
        k = next(r["_row"] for r in records if r["_starts"][0] != records[0]["_starts"][0])
        raise DatasetError(f"{clean.where(k, names[0])}: the first span starts at a different token "
                           "than on the first row; either every row starts at the BOS offset or none")
    with_bos = lead == {1}
    if with_bos and bos_span is not None and bos_span in names:
        raise DatasetError(f"{clean.path}: bos_span={bos_span!r} is also a span column; pick "
                           "another name")
    return with_bos


def _set_spans(clean: PaperTable, rec: dict, schema: Schema, schema_names, names,
               with_bos: bool, bos_span) -> None:
    """``rec["spans"]`` from its starts (the BOS token as its own span, or joining the first),
    validated; an error names the file's row and column."""
    k, starts = rec["_row"], rec.pop("_starts")
    if with_bos:
        starts = ([0] + starts) if bos_span is not None else ([0] + starts[1:])
    ranges = ranges_from_starts(starts, rec["_length"])
    rec["spans"] = dict(zip(schema_names, map(list, ranges)))
    try:
        schema.validate(rec["spans"], rec["_length"])
    except SchemaError as err:
        col = err.span if err.span in names else names[0]
        raise SchemaError(f"{clean.where(k, col)}: {err.args[0]}", rule=err.rule) from None


def _check_pair(clean: PaperTable, cf: PaperTable, roles) -> None:
    if len(cf.rows) != len(clean.rows):
        raise DatasetError(f"{clean.path} has {len(clean.rows)} rows but {cf.path} has "
                           f"{len(cf.rows)}; the counterfactual file pairs its rows with the "
                           "clean file's, one for one")
    if roles["prompt"] not in cf.header:
        raise DatasetError(f"{cf.path}: no column {roles['prompt']!r} (the counterfactual prompt)")
    for col in ("prompt_id", roles["length"]):
        if col in clean.header and col in cf.header:
            for k, (a, b) in enumerate(zip(clean.rows, cf.rows)):
                if a[col].strip() != b[col].strip():
                    raise DatasetError(f"{cf.where(k, col)}: {b[col]!r} but {clean.path} line "
                                       f"{clean.lines[k]} has {a[col]!r}; row {k + 1} of the two "
                                       "files must be the same example")


def _detect_offset(table, keep, length_col, prompt_col, tok, bos_offset) -> int:
    if bos_offset not in ("auto", 0, 1):
        raise DatasetError(f"bos_offset must be 'auto', 0 or 1, got {bos_offset!r}")
    offset = None if bos_offset == "auto" else bos_offset
    for k in keep:
        n = len(tok(table.rows[k][prompt_col])["input_ids"])
        stated = _int(table, k, length_col, "the prompt's token count")
        if offset is None and stated - n in (0, 1):
            offset = stated - n
        if offset is None or stated - n != offset:
            expect = f"{n} or {n + 1}" if offset is None else f"{n + offset}"
            raise DatasetError(
                f"{table.where(k, length_col)}: the file says {stated} tokens but the prompt "
                f"encodes to {n} with this tokenizer (expected {expect}"
                f"{'' if offset is None else f' with BOS offset {offset}'}); was the file made "
                "for another model's tokenizer?")
    return offset


def _at_row(err: PeapError, clean: PaperTable, cf: PaperTable | None, rows, roles) -> PeapError:
    """A dataset error for example i, re-pointed at the file, line and column it came from."""
    i = getattr(err, "example", None)
    if i is None or not 0 <= i < len(rows):
        return err
    f = getattr(err, "field", None)
    k = rows[i]
    column = {"clean": roles["prompt"], "length": roles["length"],
              "correct": roles["correct"] if roles["correct"] in clean.header else roles["label"],
              "incorrect": roles["incorrect"] if roles["incorrect"] in clean.header else roles["label"]
              }.get(f, roles["prompt"] if f == "corrupted" else f)
    table = cf if f == "corrupted" and cf is not None else clean
    msg = err.args[0] if err.args else str(err)
    err.args = (f"{table.where(k, column)}: {msg}",) + tuple(err.args[1:])
    return err
