"""Small word-level tokenizers for offline models and tests.

Real users load a model's own tokenizer by name; the embedded toy models and the test suite
build theirs here, with the ``tokenizers`` library, and save it next to the model so that
``from_pretrained`` on the directory gives it back.

Example:
    >>> tok = word_level_tokenizer(["Mary", "John", "gave", "a", "book", "to"])
    >>> tok("Mary gave a book to John")["input_ids"]
    [4, 6, 7, 8, 9, 5]
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")


def _pre_tokenizer(text_mode: bool):
    from tokenizers import Regex, pre_tokenizers

    if not text_mode:
        return pre_tokenizers.WhitespaceSplit()
    # Words, punctuation marks and two-digit groups ("1732" -> "17", "32") are tokens.
    return pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Split(Regex("[0-9]{2}"), behavior="isolated"),
    ])


def pieces(text: str, text_mode: bool = True) -> list[str]:
    """The pieces `word_level_tokenizer` would make of ``text`` (to collect a vocabulary)."""
    return [p for p, _ in _pre_tokenizer(text_mode).pre_tokenize_str(text)]


def word_level_tokenizer(words: Iterable[str], text_mode: bool = False):
    """A word-level ``PreTrainedTokenizerFast`` over ``words``.

    Ids 0-3 are ``<pad> <unk> <bos> <eos>``; the words follow in first-seen order (duplicates
    dropped). No special tokens are added when encoding. Splits on whitespace only, or with
    ``text_mode`` also splits off punctuation and two-digit groups (see `pieces`).
    """
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = _pre_tokenizer(text_mode)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )
