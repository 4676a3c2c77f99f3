"""Text encoders: turn prompts into the context the UNet's cross-attention reads (Rombach et al. 2022, Sec. 3.3).

Two encoders share one interface, ``encode(prompts) -> (context (B, L, D), mask (B, L))``, plus ``context_dim``
(D) and ``max_length`` (the most tokens a prompt may have, special tokens included):

- ``TinyTextEncoder``, the default and fully offline: a word-level tokenizer (``tinyldm.word_tokenizer``) trained
  on the caption corpus, and a small BERT (Devlin et al. 2019, ``tinyldm.bert``, in plain PyTorch) trained jointly with
  the UNet, as the LDM paper did for its text model (Rombach et al. 2022, Sec. 4.3.1).
- ``PretrainedTextEncoder``: a frozen pretrained sentence encoder loaded with ``from_pretrained``; by default
  sentence-transformers/all-MiniLM-L6-v2 from the Hugging Face Hub, or offline a local copy named by an argument
  or by the environment variable ``TINYLDM_TEXT_ENCODER`` (e.g. ``TINYLDM_TEXT_ENCODER=weights/all-MiniLM-L6-v2``).

Prompts are checked before encoding: an empty prompt, a prompt with more than ``max_length`` tokens, or (for the
word-level tokenizer) a word it never saw raises ValueError; nothing is silently truncated or mapped to [UNK].
The empty caption is still encodable with ``allow_empty=True`` (or ``encode_null``): it is the "null" condition of
classifier-free guidance (see ``tinyldm.guidance``), which users do not type but the sampler needs.
"""

from __future__ import annotations

import abc
import itertools
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor, nn

from tinyldm.bert import BertEncoder, BertSettings
from tinyldm.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, caption
from tinyldm.pretrained import PretrainedMixin
from tinyldm.word_tokenizer import (
    SPECIAL_TOKENS,
    WordTokenizer,
    build_tokenizer,
    tokenizer_vocabulary,
    train_tokenizer,
)

__all__ = ["TEXT_ENCODER_VAR", "DEFAULT_TEXT_ENCODER", "shapes_captions", "caption_vocabulary", "check_prompts",
           "TextEncoderConfig", "TinyTextEncoder", "PretrainedTextEncoder"]

TEXT_ENCODER_VAR = "TINYLDM_TEXT_ENCODER"
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_EXAMPLE = "a large red circle at the top left"


def shapes_captions() -> list[str]:
    """Every caption the Shapes grammar can write (all splits, held-out pairs included: their words are known,
    only their combinations are new), e.g. "a large red circle at the top left"."""
    return [caption({"size": size, "color": color, "shape": shape, "position": position})
            for size, color, shape, position in itertools.product(SIZES, COLORS, SHAPES, POSITIONS)]


@lru_cache(maxsize=1)
def _shapes_vocabulary() -> tuple[str, ...]:
    return caption_vocabulary(shapes_captions())


def caption_vocabulary(captions: Sequence[str]) -> tuple[str, ...]:
    """The words a tokenizer trained on ``captions`` knows, in id order: a ``TextEncoderConfig.vocabulary``."""
    return tokenizer_vocabulary(train_tokenizer(captions))


def check_prompts(prompts: Sequence[str], allow_empty: bool = False) -> list[str]:
    """Check user prompts: a non-empty list of str, none of them empty unless ``allow_empty``.

    Returns:
        The prompts as a list.
    """
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of str, one per image, got the str {prompts!r}; wrap it: [prompt]")
    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"no prompts given; pass a list with one prompt per image, e.g. [{_EXAMPLE!r}]")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} must be a str, got {type(prompt).__name__}: {prompt!r}")
        if not allow_empty and not prompt.strip():
            raise ValueError(f"prompt {i} is empty ({prompt!r}): describe the image, e.g. {_EXAMPLE!r}. The empty "
                             "caption is reserved for the unconditional half of classifier-free guidance")
    return prompts


class _TextEncoder(nn.Module, abc.ABC):
    """What both encoders share: checking prompts, tokenizing, and returning the context and its padding mask."""

    tokenizer: WordTokenizer  # or, for the pretrained encoder, transformers' tokenizer: both are called the same way
    max_length: int

    @property
    @abc.abstractmethod
    def context_dim(self) -> int:
        """D, the width of each context token: the UNet's ``context_dim``."""

    @abc.abstractmethod
    def _hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) token ids and mask -> (B, L, D) hidden states of the encoder's last layer."""

    def _check_words(self, prompts: list[str]) -> None:
        """Raise ValueError for words the tokenizer does not know; a subword tokenizer knows every word."""

    def encode(self, prompts: Sequence[str], *, allow_empty: bool = False) -> tuple[Tensor, Tensor]:
        """Encode prompts into a text context tau(y) (Rombach et al. 2022, Eq. 3), on the encoder's device.

        Args:
            prompts: one prompt per image.
            allow_empty: let "" through, for the null caption of classifier-free guidance.
        Returns:
            context (B, L, context_dim), the encoder's last hidden states, and mask (B, L) bool, True for real
            tokens and False for padding; L is the longest prompt's token count.
        """
        prompts = check_prompts(prompts, allow_empty)
        self._check_words(prompts)
        # Cutting one token past the limit shows a too-long prompt without tokenizing a whole novel.
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length + 1,
                                return_tensors="pt")
        lengths = tokens["attention_mask"].sum(dim=1)
        if (too_long := (lengths > self.max_length).nonzero().flatten().tolist()):
            i = too_long[0]
            raise ValueError(f"prompt {i} ({prompts[i][:60]!r}...) has more than {self.max_length} tokens, the most "
                             f"this encoder takes (max_length, special tokens included); shorten it")
        device = next(self.parameters()).device
        input_ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        return self._hidden(input_ids, mask), mask.bool()

    def encode_null(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """The null condition of classifier-free guidance: the empty caption, ``batch_size`` times.

        Returns:
            context (batch_size, L0, context_dim) and mask (batch_size, L0); L0 counts only special tokens.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return self.encode([""] * batch_size, allow_empty=True)


@dataclass
class TextEncoderConfig:
    """Hyperparameters of ``TinyTextEncoder``; ``tiny()`` and ``small()`` are the course's presets."""

    vocabulary: tuple[str, ...] = field(default_factory=_shapes_vocabulary)  # known words in id order (Shapes')
    max_length: int = 16  # most tokens per prompt, [CLS] and [SEP] included (Shapes captions have <= 11)
    hidden_size: int = 64  # D of every token: the UNet's context_dim
    num_layers: int = 2  # transformer layers
    num_heads: int = 2  # attention heads per layer
    intermediate_size: int = 256  # width of each layer's feed-forward MLP (4 D, as in BERT)
    dropout: float = 0.0  # dropout on hidden states and attention weights

    @classmethod
    def tiny(cls) -> TextEncoderConfig:
        """One 32-wide layer (about 10k parameters): for tests and the lesson's quick runs."""
        return cls(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)

    @classmethod
    def small(cls) -> TextEncoderConfig:
        """Two 64-wide layers (about 0.1M parameters): the shipped Shapes model's text encoder."""
        return cls()

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot build the encoder, and how to fix it."""
        for name in ("max_length", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TextEncoderConfig.{name} must be a positive int, got {value!r}")
        if self.max_length < 3:
            raise ValueError(f"TextEncoderConfig.max_length={self.max_length} leaves no room for a word between "
                             "[CLS] and [SEP]; use at least 3")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"TextEncoderConfig.hidden_size={self.hidden_size} is not divisible by num_heads="
                             f"{self.num_heads}; choose num_heads among its divisors")
        if not self.vocabulary or not all(isinstance(w, str) and w for w in self.vocabulary):
            raise ValueError("TextEncoderConfig.vocabulary must be a non-empty tuple of words; make one from your "
                             "captions with caption_vocabulary(captions) (tinyldm train ldm --data does it for you)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TextEncoderConfig.dropout must lie in [0, 1), got {self.dropout}")


class TinyTextEncoder(PretrainedMixin, _TextEncoder):
    """A small BERT trained from scratch with the diffusion model (Devlin et al. 2019; Rombach et al. 2022, 4.3.1).

    The vocabulary lives in the config, so ``save_pretrained`` / ``from_pretrained`` keep tokenizer, config and
    weights in one folder (config.json, model.safetensors).

    Args:
        config: the hyperparameters; ``TextEncoderConfig()`` (the Shapes vocabulary) when None.
    """

    config_class = TextEncoderConfig

    def __init__(self, config: TextEncoderConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else TextEncoderConfig()
        config.validate()
        self.max_length = config.max_length
        self.tokenizer = build_tokenizer(config.vocabulary, config.max_length)
        self.bert = BertEncoder(BertSettings(
            vocab_size=len(SPECIAL_TOKENS) + len(config.vocabulary), hidden_size=config.hidden_size,
            num_layers=config.num_layers, num_heads=config.num_heads, intermediate_size=config.intermediate_size,
            max_length=config.max_length, dropout=config.dropout))

    @property
    def context_dim(self) -> int:
        return self.config.hidden_size

    def _check_words(self, prompts: list[str]) -> None:
        vocab = self.tokenizer.get_vocab()
        for i, prompt in enumerate(prompts):
            if unknown := [w for w in self.tokenizer.words(prompt) if w not in vocab or w in SPECIAL_TOKENS]:
                raise ValueError(
                    f"prompt {i} {prompt!r} has words this tokenizer never saw: {unknown}. It knows "
                    f"{len(self.config.vocabulary)} words, learnt from its training captions "
                    f"(TextEncoderConfig.vocabulary), e.g. {list(self.config.vocabulary[:8])}; use those words, "
                    "or train a model on captions that have yours (tinyldm train ldm --data DIR; in Python, "
                    "TextEncoderConfig(vocabulary=caption_vocabulary(captions)))")

    def _hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.bert(input_ids, attention_mask)  # (B, L, D)

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class PretrainedTextEncoder(_TextEncoder):
    """A frozen pretrained transformer encoder, e.g. all-MiniLM-L6-v2 (MiniLM, Wang et al. 2020, tuned as a sentence
    encoder the Sentence-BERT way, Reimers & Gurevych 2019), D = 384.

    Its weights never train and it stays in eval mode (dropout off) even inside a model put in train mode.

    Args:
        name_or_path: a Hub name or a local folder written by ``save_pretrained``; when None, the folder in
            ``$TINYLDM_TEXT_ENCODER``, else ``DEFAULT_TEXT_ENCODER`` (downloaded once, then cached).
        max_length: the most tokens per prompt; the model's limit (512 for MiniLM) when None.
    """

    def __init__(self, name_or_path: str | os.PathLike | None = None, max_length: int | None = None):
        super().__init__()
        source = TEXT_ENCODER_VAR if name_or_path is None and os.environ.get(TEXT_ENCODER_VAR) else "argument"
        name = str(name_or_path or os.environ.get(TEXT_ENCODER_VAR) or DEFAULT_TEXT_ENCODER)
        # transformers' modelling code loads here, for the pretrained encoder only (it takes seconds to import)
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name)
        except (OSError, ValueError) as error:
            where = f"${TEXT_ENCODER_VAR}" if source == TEXT_ENCODER_VAR else "the name given"
            raise OSError(f"could not load the text encoder {name!r} (from {where}): {error}. Offline, pass the "
                          f"folder of a local copy (PretrainedTextEncoder('path/to/all-MiniLM-L6-v2')) or set "
                          f"{TEXT_ENCODER_VAR} to it; online, PretrainedTextEncoder() downloads "
                          f"{DEFAULT_TEXT_ENCODER!r} from the Hugging Face Hub") from error
        self.name = name
        limit = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        if max_length is not None and not (isinstance(max_length, int) and 3 <= max_length <= limit):
            raise ValueError(f"max_length must be an int in [3, {limit}] for {name!r}, got {max_length!r}")
        self.max_length = max_length or limit
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def context_dim(self) -> int:
        return self.model.config.hidden_size

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        """Frozen: the encoder stays in eval mode whatever ``mode`` says."""
        return super().train(False)

    @torch.no_grad()
    def _hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, max_length={self.max_length}, frozen"
