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


def word_level_tokenizer(words: Iterable[str]):
    """A whitespace-splitting word-level ``PreTrainedTokenizerFast`` over ``words``.

    Ids 0-3 are ``<pad> <unk> <bos> <eos>``; the words follow in first-seen order (duplicates
    dropped). No special tokens are added when encoding, so token positions are word positions.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )
