"""Datasets: prompts, counterfactuals, answers and span annotations, tokenized for one model.

A record is a mapping with ``clean``, optional ``corrupted``, ``correct``, ``incorrect`` and
``spans`` ``{name: [start, end)}`` in token positions of the clean prompt exactly as the model's
tokenizer encodes it (special tokens included where that tokenizer adds them). Nothing is added or
dropped silently: every rule broken raises an error naming the example.

Example:
    >>> ds = Dataset.from_records([{
    ...     "clean": "When Mary and John went to the store , John gave a book to",
    ...     "corrupted": "When Anna and Tom went to the store , Kate gave a book to",
    ...     "correct": "Mary", "incorrect": "John",
    ...     "spans": {"prefix": [0, 1], "IO": [1, 2], "and": [2, 3], "S1": [3, 4],
    ...               "action1": [4, 9], "S2": [9, 10], "action2": [10, 13], "to": [13, 14]},
    ... }], model)                                                      # doctest: +SKIP
    >>> ds.to_json("ioi.json"); Dataset.from_json("ioi.json", model)    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

from ..errors import DatasetError, PeapError, SchemaError, in_file
from ..util.jsonio import dump_json, load_json, read_text
from .schema import Ranges, Schema, ranges_from_starts

FORMAT = "peap_widget.dataset"
RECORD_FIELDS = ("clean", "corrupted", "correct", "incorrect", "spans")
if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformers import PreTrainedTokenizerBase


class HasTokenizer(Protocol):
    """A `pw.Model`, or anything else that carries an HF tokenizer as ``.tokenizer``."""

    tokenizer: Any


#: what encodes prompts: a `pw.Model` (its tokenizer) or an HF tokenizer itself
TokenizerSource = Union[HasTokenizer, "PreTrainedTokenizerBase"]


CSV_FIELDS = ("prompt", "corrupted", "correct", "incorrect", "length")


@dataclass
class Example:
    """One validated, tokenized example. ``spans`` are ``(start, end)`` in schema order."""

    clean: str
    corrupted: str | None
    correct: str
    incorrect: str
    spans: Ranges
    clean_ids: list[int]
    corrupted_ids: list[int] | None
    correct_id: int
    incorrect_id: int
    extra: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.clean_ids)

    def span_dict(self, schema: Schema) -> dict[str, list[int]]:
        return {name: [s, e] for name, (s, e) in zip(schema.spans, self.spans)}


@dataclass
class Batch:
    """Right-padded tensors for one batch (see `Dataset.batches`).

    Right padding keeps positions 0..len-1 and lets real tokens never see a pad under the causal
    mask, so a batched run equals the per-example runs exactly; pads have span id -1.
    """

    indices: list[int]
    clean_ids: "torch.Tensor"        # [B, T]
    corrupted_ids: "torch.Tensor | None"
    lengths: "torch.Tensor"          # [B]
    span_ids: "torch.Tensor"         # [B, T], -1 at pads
    correct: "torch.Tensor"          # [B]
    incorrect: "torch.Tensor"        # [B]
    n_spans: int

    @property
    def size(self) -> int:
        return len(self.indices)

    def span_onehot(self, dtype) -> "torch.Tensor":
        """[B, S, T] indicator of token t lying in span s."""
        import torch

        s = torch.arange(self.n_spans, device=self.span_ids.device)
        return (self.span_ids[:, None, :] == s[None, :, None]).to(dtype)


def tokenizer_of(model_or_tokenizer):
    """The tokenizer of a `pw.Model` (or the tokenizer itself); a clear error without one."""
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if tok is None or not callable(tok):
        raise DatasetError("need a model with a tokenizer (pw.load_model(..., tokenizer=...)) "
                           "or a tokenizer to encode the prompts")
    return tok


class Dataset:
    """Validated examples sharing one `Schema`, tokenized with one tokenizer."""

    def __init__(self, schema: Schema, examples: list[Example],
                 tokenizer: PreTrainedTokenizerBase | None = None):
        if not examples:
            raise DatasetError("the dataset is empty: give at least one record")
        self.schema = schema
        self.examples = examples
        self.tokenizer = tokenizer

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_records(cls, records: Sequence[Mapping], model: TokenizerSource, schema: Schema | Sequence[str] | None = None
                     ) -> Dataset:
        """Tokenize and validate records (see the module docstring for their fields).

        ``schema`` defaults to the span names of the first record, in its order.
        """
        records = list(records)
        if not records:
            raise DatasetError("the dataset is empty: give at least one record")
        tok = tokenizer_of(model)
        if schema is None:
            first = records[0].get("spans") if isinstance(records[0], Mapping) else None
            if not isinstance(first, Mapping) or not first:
                raise DatasetError("needs a 'spans' mapping to infer the schema from "
                                   "(or pass schema=[...])", example=0, field="spans")
            schema = Schema(list(first))
        elif not isinstance(schema, Schema):
            schema = Schema(schema)
        examples = [_make_example(i, r, schema, tok) for i, r in enumerate(records)]
        if getattr(model, "hf", None) is not None:
            check_model_limits(examples, model.hf)
        return cls(schema, examples, tok)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Dataset(self.schema, self.examples[i], self.tokenizer)
        return self.examples[i]

    def __repr__(self) -> str:
        return f"Dataset({len(self)} examples, schema={list(self.schema.spans)})"

    @property
    def has_counterfactuals(self) -> bool:
        return all(e.corrupted_ids is not None for e in self.examples)

    def require_counterfactuals(self) -> None:
        for i, e in enumerate(self.examples):
            if e.corrupted_ids is None:
                raise DatasetError("counterfactual ablation needs a 'corrupted' prompt for every "
                                   "example (or use ablation='mean' or 'zero')",
                                   example=i, field="corrupted")

    def tokens(self, i: int) -> list[str]:
        """The clean prompt of example ``i`` as token strings."""
        return self.tokenizer.convert_ids_to_tokens(self.examples[i].clean_ids)

    def to_records(self) -> list[dict]:
        out = []
        for e in self.examples:
            r = {"clean": e.clean}
            if e.corrupted is not None:
                r["corrupted"] = e.corrupted
            r.update(correct=e.correct, incorrect=e.incorrect, spans=e.span_dict(self.schema))
            r.update(e.extra)
            out.append(r)
        return out

    # --- batching -------------------------------------------------------------------------

    def batches(self, batch_size: int | None = None, device: str | torch.device | None = None, pad_id: int | None = None
                ) -> Iterator[Batch]:
        """Yield right-padded `Batch` objects of consecutive examples (all at once when None)."""
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise PeapError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        n = len(self)
        size = n if batch_size is None else batch_size
        for start in range(0, n, size):
            yield self.batch(range(start, min(n, start + size)), device, pad_id)

    def batch(self, indices: Sequence[int], device: str | torch.device | None = None, pad_id: int | None = None) -> Batch:
        """One right-padded `Batch` of the examples at ``indices`` (any order)."""
        import torch

        if pad_id is None:
            pad_id = getattr(self.tokenizer, "pad_token_id", None)
            pad_id = 0 if pad_id is None else pad_id
        idx = [int(i) for i in indices]
        exs = [self.examples[i] for i in idx]
        T = max(e.length for e in exs)
        clean = torch.full((len(exs), T), pad_id, dtype=torch.long)
        span_ids = torch.full((len(exs), T), -1, dtype=torch.long)
        corrupted = None
        if all(e.corrupted_ids is not None for e in exs):
            corrupted = torch.full((len(exs), T), pad_id, dtype=torch.long)
        for b, e in enumerate(exs):
            clean[b, : e.length] = torch.tensor(e.clean_ids)
            if corrupted is not None:
                corrupted[b, : e.length] = torch.tensor(e.corrupted_ids)
            for s, (lo, hi) in enumerate(e.spans):
                span_ids[b, lo:hi] = s
        return Batch(
            indices=idx,
            clean_ids=clean.to(device),
            corrupted_ids=None if corrupted is None else corrupted.to(device),
            lengths=torch.tensor([e.length for e in exs], device=device),
            span_ids=span_ids.to(device),
            correct=torch.tensor([e.correct_id for e in exs], device=device),
            incorrect=torch.tensor([e.incorrect_id for e in exs], device=device),
            n_spans=len(self.schema),
        )

    # --- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "schema": self.schema.to_dict(),
                "examples": self.to_records()}

    def to_json(self, path: str | Path | None = None) -> str:
        """The schema and every record (spans as end-exclusive token ranges) as JSON."""
        return dump_json(self.to_dict(), path, indent=1)

    @classmethod
    def from_dict(cls, d: Mapping, model: TokenizerSource) -> Dataset:
        if not isinstance(d, Mapping) or "examples" not in d or "schema" not in d:
            raise DatasetError(f"not a {FORMAT} JSON document: it needs 'schema' and 'examples'")
        if not isinstance(d["examples"], list):
            raise DatasetError(f"'examples' must be a list of records, got "
                               f"{type(d['examples']).__name__}")
        return cls.from_records(d["examples"], model, schema=Schema.from_dict(d["schema"]))

    @classmethod
    def from_json(cls, path: str | Path, model: TokenizerSource) -> Dataset:
        """Read a dataset written by `to_json`; any problem raises a `PeapError` naming the file
        (and the example)."""
        d = load_json(read_text(path, "dataset JSON", DatasetError), str(path), DatasetError)
        try:
            return cls.from_dict(d, model)
        except PeapError as err:
            raise in_file(err, path) from None

    def require_model(self, model: HasTokenizer) -> None:
        """Check that this dataset can run on ``model``: tokenized with the same vocabulary, every
        token id inside its embedding, every prompt within its positions. Raises
        `DatasetError` naming the first example that cannot."""
        check_tokenizer(self.tokenizer, getattr(model, "tokenizer", None))
        hf = getattr(model, "hf", None)
        if hf is not None:
            check_model_limits(self.examples, hf)

    # --- PEAP CSV ----------------------------------------------------------------------------

    def to_peap_csv(self, path: str | Path | None = None) -> pd.DataFrame:
        """PEAP's CSV form: ``prompt``, ``corrupted``, ``correct``, ``incorrect``, one column per
        span holding its first token index, and ``length``. Returns the DataFrame."""
        import pandas as pd

        rows = []
        for e in self.examples:
            row = {"prompt": e.clean, "corrupted": e.corrupted or "", "correct": e.correct,
                   "incorrect": e.incorrect}
            row.update({name: s for name, (s, _) in zip(self.schema.spans, e.spans)})
            row["length"] = e.length
            rows.append(row)
        df = pd.DataFrame(rows, columns=[*CSV_FIELDS[:4], *self.schema.spans, "length"])
        if path is not None:
            df.to_csv(path, index=False)
        return df

    @classmethod
    def from_peap_csv(cls, path_or_frame: str | Path | pd.DataFrame, model: TokenizerSource, schema: Schema | Sequence[str] | None = None
                      ) -> Dataset:
        """Read PEAP's CSV form. Span columns are every column that is not one of
        ``prompt, corrupted, correct, incorrect, length`` (in file order) unless ``schema`` is given."""
        import pandas as pd

        frame = isinstance(path_or_frame, pd.DataFrame)
        df = path_or_frame if frame else read_csv(path_or_frame)
        try:
            names, records = peap_csv_records(df, schema)
            return cls.from_records(records, model, schema=schema if schema is not None else names)
        except PeapError as err:
            raise (err if frame else in_file(err, path_or_frame)) from None

    @classmethod
    def from_peap_paper(cls, clean_csv: str | Path, counterfactual_csv: str | Path,
                        model: TokenizerSource, **options) -> Dataset:
        """Read the PEAP paper's released files (``data/<model>/<task>/{human_baseline,agent,
        agent_with_mask}/*.csv``): a clean file and its counterfactual file, answers in
        ``correct_token`` / ``wrong_token`` (greater-than: ``label``), metadata columns kept
        apart, the BOS token their pipeline counts detected and removed. ``options``:
        ``spans``, ``answers``, ``columns``, ``bos_offset``, ``bos_span``, ``split``, ``ignore``
        (see `peap_widget.data.paper_data.load_peap_paper`). ``ds.paper_report`` says what was found.

            >>> ds = Dataset.from_peap_paper("IOI_data_clean.csv", "IOI_data_counter_abc.csv",
            ...                              model, split="circuit")        # doctest: +SKIP
        """
        from .paper_data import load_peap_paper

        return load_peap_paper(clean_csv, counterfactual_csv, model, **options)


def read_csv(path):
    """A CSV file as a DataFrame of strings; unreadable, empty, ragged or non-UTF-8 files raise
    `DatasetError` naming the file (and the line where pandas says)."""
    import pandas as pd

    try:
        return pd.read_csv(path, keep_default_na=False, dtype=str, encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not UTF-8 text: byte {err.start} is "
                           f"{err.object[err.start:err.start + 1]!r}") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path} is empty: a PEAP CSV needs a header line") from None
    except pd.errors.ParserError as err:
        raise DatasetError(f"{path} is not a well-formed CSV: {err}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from None


def peap_csv_records(df, schema=None) -> tuple[list[str], list[dict]]:
    """PEAP's CSV form (a DataFrame of strings) -> (span names, records with token spans).
    Span columns are every column that is not one of ``prompt, corrupted, correct, incorrect,
    length`` (in file order) unless ``schema`` is given."""
    lacking = [c for c in ("prompt", "correct", "incorrect", "length") if c not in df.columns]
    if lacking:
        raise DatasetError(f"the PEAP CSV lacks the column(s) {lacking} (columns: "
                           f"{list(df.columns)}); a PEAP CSV has prompt, corrupted, correct, "
                           "incorrect, one column per span, length")
    if len(set(df.columns)) != len(df.columns) or any(str(c).split(".")[0] in CSV_FIELDS
                                                      and c not in CSV_FIELDS for c in df.columns):
        raise DatasetError(f"the PEAP CSV repeats a column name ({list(df.columns)}); span "
                           f"columns may not be named {', '.join(CSV_FIELDS)}")
    names = list(schema) if schema is not None else [c for c in df.columns if c not in CSV_FIELDS]
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DatasetError(f"the PEAP CSV has no column for spans {missing}")
    if not names:
        raise DatasetError("the PEAP CSV has no span columns")
    records = []
    for i, row in enumerate(df.to_dict("records")):
        try:
            starts = [int(row[n]) for n in names]
            length = int(row["length"])
        except (TypeError, ValueError):
            raise SchemaError(f"span starts and length must be integers (line {i + 2})",
                              example=i, rule="format") from None
        rec = {"clean": str(row["prompt"]), "correct": str(row["correct"]),
               "incorrect": str(row["incorrect"]),
               "spans": dict(zip(names, map(list, ranges_from_starts(starts, length))))}
        if str(row.get("corrupted", "")):
            rec["corrupted"] = str(row["corrupted"])
        rec["_length"] = length
        records.append(rec)
    return names, records


def encode_text(tok, text: str) -> list[int]:
    """Token ids of ``text`` exactly as ``tok`` encodes it (its own special tokens included)."""
    return list(tok(text)["input_ids"])


def check_tokenizer(data_tok, model_tok) -> None:
    """The dataset's tokenizer and the model's must encode alike (the same vocabulary)."""
    if data_tok is None or model_tok is None or data_tok is model_tok:
        return
    try:
        same = data_tok.get_vocab() == model_tok.get_vocab()
    except AttributeError:
        return
    if not same:
        raise DatasetError(
            f"the dataset was tokenized for another tokenizer ({type(data_tok).__name__}, "
            f"{len(data_tok)} tokens) than the model's ({type(model_tok).__name__}, "
            f"{len(model_tok)} tokens); rebuild it for this model: Dataset.from_records(records, "
            "model) or task.dataset(model)")


def max_positions(config) -> int | None:
    """The longest prompt a model config allows (None when it does not say)."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_model_limits(examples, hf) -> None:
    """Every token id inside the model's embedding and every prompt within its positions."""
    vocab = hf.get_input_embeddings().weight.shape[0]
    limit = max_positions(hf.config)
    for i, e in enumerate(examples):
        for name, ids in (("clean", e.clean_ids), ("corrupted", e.corrupted_ids or [])):
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise DatasetError(f"token id {bad[0]} is outside the model's vocabulary of "
                                   f"{vocab} (was it tokenized for another model?)",
                                   example=i, field=name)
        if limit is not None and e.length > limit:
            raise DatasetError(f"the prompt is {e.length} tokens long but the model has only "
                               f"{limit} positions", example=i, field="clean")


def _make_example(i: int, rec, schema: Schema, tok) -> Example:
    if not isinstance(rec, Mapping):
        raise DatasetError(f"a record is a mapping with fields {RECORD_FIELDS}, got "
                           f"{type(rec).__name__}", example=i)
    for f in ("clean", "correct", "incorrect", "spans"):
        if f not in rec or rec[f] is None:
            raise DatasetError("the field is missing", example=i, field=f)
    for f in ("clean", "correct", "incorrect"):
        if not isinstance(rec[f], str):
            raise DatasetError(f"must be a string, got {type(rec[f]).__name__}", example=i, field=f)
    clean_ids = encode_text(tok, rec["clean"])
    stated = rec.get("_length")
    if stated is not None and stated != len(clean_ids):
        raise DatasetError(f"the CSV says length {stated} but the prompt encodes to "
                           f"{len(clean_ids)} tokens", example=i, field="length")
    ranges = schema.validate(rec["spans"], len(clean_ids), example=i)
    corrupted = rec.get("corrupted")
    corrupted_ids = None
    if corrupted is not None:
        if not isinstance(corrupted, str):
            raise DatasetError(f"must be a string, got {type(corrupted).__name__}",
                               example=i, field="corrupted")
        corrupted_ids = encode_text(tok, corrupted)
        if len(corrupted_ids) != len(clean_ids):
            raise DatasetError(
                f"the corrupted prompt encodes to {len(corrupted_ids)} tokens but the clean one to "
                f"{len(clean_ids)}; counterfactual pairs must have the same length",
                example=i, field="corrupted")
    answer_ids = []
    for f in ("correct", "incorrect"):
        ids = tok(rec[f], add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = tok.convert_ids_to_tokens(ids)
            raise DatasetError(f"{rec[f]!r} encodes to {len(ids)} tokens {pieces}; an answer must be "
                               "exactly one token (mind the leading space of BPE vocabularies)",
                               example=i, field=f)
        answer_ids.append(ids[0])
    extra = {k: v for k, v in rec.items() if k not in RECORD_FIELDS and not k.startswith("_")}
    return Example(rec["clean"], corrupted, rec["correct"], rec["incorrect"], ranges, clean_ids,
                   corrupted_ids, answer_ids[0], answer_ids[1], extra)
