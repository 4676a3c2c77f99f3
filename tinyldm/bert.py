"""A BERT encoder in plain PyTorch (Devlin et al. 2019): the small text encoder's network, built from PyTorch's own
layers so that drawing an image never loads a transformer library's modelling code.

The modules carry BERT's parameter names (``embeddings.word_embeddings``, ``encoder.layer.0.attention.self.query``
...), so a state dict saved from ``transformers.BertModel`` loads unchanged, and ``tests/test_bert.py`` checks the
two networks against each other. Only what the course uses is here: no pooler, one token type, absolute positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BertSettings", "BertEncoder"]

LAYER_NORM_EPS = 1e-12  # BERT's


@dataclass
class BertSettings:
    """The shape of a ``BertEncoder``."""

    vocab_size: int  # token ids are in [0, vocab_size)
    hidden_size: int  # D of every token
    num_layers: int  # transformer layers
    num_heads: int  # attention heads per layer; D must be divisible by it
    intermediate_size: int  # width of each layer's feed-forward MLP
    max_length: int  # most tokens per sequence (position embeddings)
    dropout: float = 0.0  # on hidden states and attention weights, in training


class _Embeddings(nn.Module):
    def __init__(self, s: BertSettings):
        super().__init__()
        self.word_embeddings = nn.Embedding(s.vocab_size, s.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(s.max_length, s.hidden_size)
        self.token_type_embeddings = nn.Embedding(1, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(s.dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        L = input_ids.shape[1]
        positions = torch.arange(L, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight
        return self.dropout(self.LayerNorm(x))  # (B, L, D)


class _SelfAttentionProjections(nn.Module):
    def __init__(self, s: BertSettings):
        super().__init__()
        self.query = nn.Linear(s.hidden_size, s.hidden_size)
        self.key = nn.Linear(s.hidden_size, s.hidden_size)
        self.value = nn.Linear(s.hidden_size, s.hidden_size)


class _DenseNorm(nn.Module):
    """BERT's sub-layer output: dense, dropout, then LayerNorm of the residual sum."""

    def __init__(self, width_in: int, s: BertSettings):
        super().__init__()
        self.dense = nn.Linear(width_in, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(s.dropout)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class _Attention(nn.Module):
    def __init__(self, s: BertSettings):
        super().__init__()
        self.self = _SelfAttentionProjections(s)
        self.output = _DenseNorm(s.hidden_size, s)
        self.num_heads, self.p = s.num_heads, s.dropout

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        B, L, D = x.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.reshape(B, L, h, D // h).transpose(1, 2)  # (B, heads, L, D / heads)

        q, k, v = heads(self.self.query(x)), heads(self.self.key(x)), heads(self.self.value(x))
        # softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, Eq. 1); padding keys get no weight
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :],
                                             dropout_p=self.p if self.training else 0.0)
        return self.output(out.transpose(1, 2).reshape(B, L, D), x)  # (B, L, D)


class _Intermediate(nn.Module):
    def __init__(self, s: BertSettings):
        super().__init__()
        self.dense = nn.Linear(s.hidden_size, s.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, s: BertSettings):
        super().__init__()
        self.attention = _Attention(s)
        self.intermediate = _Intermediate(s)
        self.output = _DenseNorm(s.intermediate_size, s)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        x = self.attention(x, keep)
        return self.output(F.gelu(self.intermediate.dense(x)), x)  # the feed-forward MLP, exact GELU


class _Stack(nn.Module):
    def __init__(self, s: BertSettings):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(s) for _ in range(s.num_layers))


class BertEncoder(nn.Module):
    """Token ids in, one D-wide vector per token out: BERT's last hidden states.

    Args:
        settings: the network's shape.
    """

    def __init__(self, settings: BertSettings):
        super().__init__()
        if settings.hidden_size % settings.num_heads:
            raise ValueError(f"hidden_size {settings.hidden_size} is not divisible by num_heads "
                             f"{settings.num_heads}; choose num_heads among its divisors")
        self.embeddings = _Embeddings(settings)
        self.encoder = _Stack(settings)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Args:
            input_ids: (B, L) int64 token ids.
            attention_mask: (B, L), 1 (or True) for real tokens and 0 for padding.
        Returns:
            (B, L, D) hidden states of the last layer.
        """
        keep = attention_mask.bool()  # (B, L)
        x = self.embeddings(input_ids)  # (B, L, D)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x
