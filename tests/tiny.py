"""Tiny models and datasets shared by the tests (random weights, built in memory, offline)."""

from peap_widget.models.examples import NAMES, SCHEMA, WORDS, tiny_gpt2, tiny_records, tiny_tokenizer  # noqa: F401
