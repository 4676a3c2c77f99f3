"""The small text encoder's tokenizer: whole words, BERT's layout ([CLS] words [SEP]), on the ``tokenizers`` library.

Captions of a small world use few words, so the tokenizer keeps each word whole: it lower-cases, splits on
whitespace and punctuation, and maps each word to an id. ``train_tokenizer`` learns the words from captions,
``build_tokenizer`` rebuilds the same tokenizer from its word list (which is how a saved model keeps it: the list
lives in the text encoder's config).

``WordTokenizer`` offers the few calls of ``transformers``' tokenizers that the course uses (calling it on text,
``convert_ids_to_tokens``, ``decode``, ``save_pretrained``) without importing ``transformers``, which takes a
noticeable part of a second; ``save_pretrained`` writes a folder that ``transformers.AutoTokenizer`` also loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

__all__ = ["SPECIAL_TOKENS", "WordTokenizer", "train_tokenizer", "build_tokenizer", "tokenizer_vocabulary"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # ids 0-3 in every tokenizer built here
PAD, UNK, CLS, SEP = SPECIAL_TOKENS


class WordTokenizer:
    """A word-level tokenizer with BERT's special tokens, wrapping a ``tokenizers.Tokenizer``.

    Args:
        backend: a ``tokenizers.Tokenizer`` with a WordLevel model that knows SPECIAL_TOKENS.
        max_length: the most tokens a text may have, [CLS] and [SEP] included (``model_max_length``).
    """

    def __init__(self, backend: Tokenizer, max_length: int):
        missing = [token for token in SPECIAL_TOKENS if backend.token_to_id(token) is None]
        if missing:
            raise ValueError(f"the tokenizer lacks the special tokens {missing}; build it with train_tokenizer or "
                             "build_tokenizer")
        self.backend_tokenizer = backend
        self.model_max_length = max_length
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id = (
            backend.token_to_id(token) for token in SPECIAL_TOKENS)
        # BERT's layout: [CLS] words [SEP]; the empty text becomes just [CLS] [SEP].
        backend.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", special_tokens=[(CLS, self.cls_token_id), (SEP, self.sep_token_id)])

    @property
    def vocab_size(self) -> int:
        """How many tokens it knows, the special ones included."""
        return self.backend_tokenizer.get_vocab_size()

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, the special tokens included."""
        return self.backend_tokenizer.get_vocab()

    def words(self, text: str) -> list[str]:
        """The words of ``text`` as the tokenizer sees them: lower-cased, split on whitespace and punctuation."""
        backend = self.backend_tokenizer
        return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))]

    def __call__(self, text: str | Sequence[str], *, padding: bool = False, truncation: bool = False,
                 max_length: int | None = None, return_tensors: str | None = None) -> dict:
        """Token ids and attention masks, as ``transformers`` tokenizers return them.

        Args:
            text: one text (lists of ints come back) or a list of texts (lists of lists, or tensors).
            padding: pad every text with [PAD] to the longest one's length.
            truncation: cut texts longer than ``max_length`` (default ``model_max_length``), keeping [SEP] last.
            return_tensors: "pt" for (B, L) int64 tensors; needs a list of texts and equal lengths (padding).
        Returns:
            ``{"input_ids": ..., "attention_mask": ...}``, the mask 1 for real tokens and 0 for padding.
        """
        single = isinstance(text, str)
        encodings = self.backend_tokenizer.encode_batch([text] if single else list(text))
        ids = [encoding.ids for encoding in encodings]
        if truncation:
            limit = max_length or self.model_max_length
            ids = [row if len(row) <= limit else row[:limit - 1] + [self.sep_token_id] for row in ids]
        masks = [[1] * len(row) for row in ids]
        if padding:
            width = max(len(row) for row in ids)
            ids = [row + [self.pad_token_id] * (width - len(row)) for row in ids]
            masks = [row + [0] * (width - len(row)) for row in masks]
        if return_tensors is not None:
            if return_tensors != "pt" or single:
                raise ValueError(f"return_tensors={return_tensors!r} with a {'str' if single else 'list'}: only "
                                 "'pt' is supported, for a list of texts")
            if len({len(row) for row in ids}) > 1:
                raise ValueError("texts of different lengths make no tensor; pass padding=True")
            return {"input_ids": torch.tensor(ids, dtype=torch.long),
                    "attention_mask": torch.tensor(masks, dtype=torch.long)}
        return {"input_ids": ids[0], "attention_mask": masks[0]} if single else {"input_ids": ids,
                                                                                   "attention_mask": masks}

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        """The token of each id (one id gives one str)."""
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of each token ([UNK]'s id for a word it does not know)."""
        lookup = self.get_vocab()
        if isinstance(tokens, str):
            return lookup.get(tokens, self.unk_token_id)
        return [lookup.get(token, self.unk_token_id) for token in tokens]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend_tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json``: ``WordTokenizer.from_pretrained`` and
        ``transformers.AutoTokenizer.from_pretrained`` both load the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend_tokenizer.save(str(folder / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": self.model_max_length,
                  "pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> WordTokenizer:
        """Load a folder written by ``save_pretrained``."""
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder} has no tokenizer.json; it is written by WordTokenizer.save_pretrained")
        config = json.loads((folder / "tokenizer_config.json").read_text())
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), config["model_max_length"])

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length})"


def _word_level(model: models.WordLevel) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def train_tokenizer(captions: Sequence[str], max_length: int = 16) -> WordTokenizer:
    """Learn the words of ``captions``: ids 0-3 are SPECIAL_TOKENS, then the words by falling frequency (ties
    alphabetical), so the same captions always give the same ids.

    Args:
        captions: the training corpus, e.g. ``tinyldm.text.shapes_captions()``.
        max_length: the most tokens a text may have, [CLS] and [SEP] included.
    """
    captions = list(captions)
    if not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"captions must be a non-empty list of str to learn words from, got {captions[:3]!r}")
    tokenizer = _word_level(models.WordLevel(unk_token=UNK))
    tokenizer.train_from_iterator(captions, trainer=trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    return WordTokenizer(tokenizer, max_length)


def build_tokenizer(vocabulary: Sequence[str], max_length: int = 16) -> WordTokenizer:
    """The tokenizer with a known vocabulary: SPECIAL_TOKENS get ids 0-3 and ``vocabulary[i]`` gets id 4 + i."""
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *vocabulary])}
    if len(vocab) != len(SPECIAL_TOKENS) + len(vocabulary):
        raise ValueError(f"the vocabulary repeats a word or contains a special token {SPECIAL_TOKENS}: "
                         f"{list(vocabulary)}")
    return WordTokenizer(_word_level(models.WordLevel(vocab=vocab, unk_token=UNK)), max_length)


def tokenizer_vocabulary(tokenizer: WordTokenizer) -> tuple[str, ...]:
    """The words of a tokenizer from this module in id order, special tokens left out."""
    return tuple(token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
                 if token not in SPECIAL_TOKENS)
