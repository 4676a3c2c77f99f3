"""Attention for the UNet: self-attention over pixels, cross-attention from pixels to words, and the
SpatialTransformer block that lets a text prompt steer the image (Rombach et al. 2022, Sec. 3.3).

Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V (Vaswani et al. 2017, Eq. 1). In self-attention Q, K and V
all come from the image's N = H*W positions; in cross-attention Q comes from the image and K, V from the L text
tokens, so every pixel asks "which words are about me?". Text prompts have different lengths and are padded to a
common L; a boolean mask (True = a real token) keeps the padding out of the softmax.

The normal path calls ``F.scaled_dot_product_attention`` (a fused kernel); ``return_weights=True`` computes the
softmax explicitly so the lesson can draw which pixels listen to which word, and ``record_attention`` collects
those maps from every SpatialTransformer of a model while it samples.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["group_norm", "zero_module", "attention_weights", "SelfAttention", "CrossAttention", "FeedForward",
           "SpatialTransformer", "record_attention"]


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups, or fewer when ``channels`` is not a multiple of it.

    GroupNorm normalises over groups of channels and over space, so it behaves the same at batch size 1 (sampling)
    and 128 (training), unlike BatchNorm (Wu & He 2018).
    """
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's weights so that a residual branch starts as the identity (Goyal et al. 2017)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(d_head)) written out (Vaswani et al. 2017, Eq. 1), for looking at, not for speed.

    Args:
        q: (B, heads, N, d_head) queries.
        k: (B, heads, L, d_head) keys.
        mask: (B, L) bool, True for keys that take part; rows whose keys are all masked get all-zero weights.
    Returns:
        (B, heads, N, L) weights; each row sums to 1 (or to 0 where every key is masked).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, heads, N, L)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    # softmax over a row of -inf is 0/0 = NaN; such a row has nothing to attend to, so its weights are 0
    return torch.nan_to_num(scores.softmax(dim=-1), nan=0.0)


class SelfAttention(nn.Module):
    """Every pixel attends to every other pixel: global context at a low resolution (Vaswani et al. 2017, Eq. 1).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V over the N = H*W positions, with a residual connection.
    Its cost grows as N^2, so the UNet uses it only where the feature map is small.

    Args:
        channels: C.
        num_heads: attention heads; C must be divisible by it.
        groups: GroupNorm groups.
    """

    def __init__(self, channels: int, num_heads: int = 4, groups: int = 32):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention width {channels} is not divisible by num_heads={num_heads}; "
                             f"pick num_heads among the divisors of {channels}")
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)  # (B, 3, h, d, N)
        q, k, v = qkv.permute(1, 0, 2, 4, 3).unbind(0)  # each (B, heads, N, d_head)
        # Vaswani et al. 2017, Eq. 1: softmax(Q K^T / sqrt(d_head)) V
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d_head)
        out = out.permute(0, 1, 3, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + self.proj(out)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


class CrossAttention(nn.Module):
    """Multi-head attention of N query tokens over L context tokens (Vaswani et al. 2017, Eq. 1 and Sec. 3.2.2).

    Q = x W_Q, K = context W_K, V = context W_V, split into heads; out = concat_heads(softmax(Q K^T / sqrt(d)) V) W_O.
    Built without ``context_dim`` it is self-attention over x (context = x), as in the first attention of a
    transformer block; with ``context_dim`` it needs a context, and a mask may hide padded context tokens.

    Args:
        query_dim: D of the queries x.
        context_dim: D_c of the context tokens; None for self-attention.
        num_heads: number of heads.
        head_dim: d_head, the width of each head; ``query_dim // num_heads`` when None.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, num_heads: int = 4,
                 head_dim: int | None = None):
        super().__init__()
        if head_dim is None:
            if query_dim % num_heads:
                raise ValueError(f"query_dim={query_dim} is not divisible by num_heads={num_heads}; pick num_heads "
                                 f"among the divisors of {query_dim} or give head_dim")
            head_dim = query_dim // num_heads
        self.query_dim, self.context_dim, self.num_heads, self.head_dim = query_dim, context_dim, num_heads, head_dim
        inner = num_heads * head_dim
        # No biases on Q, K, V, as in the CompVis latent-diffusion code.
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def _check(self, x: Tensor, context: Tensor | None, mask: Tensor | None) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.query_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, N, {self.query_dim}), got {shape}")
        if self.context_dim is None:
            if context is not None or mask is not None:
                raise ValueError("this is self-attention (built with context_dim=None), so it takes no context or "
                                 "mask; build CrossAttention(query_dim, context_dim=...) to attend to text")
            return
        if context is None:
            raise ValueError(f"this cross-attention was built with context_dim={self.context_dim}: pass context "
                             f"(B, L, {self.context_dim}), e.g. a text encoder's output")
        B = x.shape[0]
        if not isinstance(context, Tensor) or context.ndim != 3 or context.shape[0] != B \
                or context.shape[-1] != self.context_dim:
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"context must have shape ({B}, L, {self.context_dim}), got {got}")
        if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool
                                 or tuple(mask.shape) != tuple(context.shape[:2])):
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of shape {tuple(context.shape[:2])} (True = a real token), "
                             f"got {got}; convert a 0/1 attention_mask with .bool()")

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from x to the context (or to x itself).

        A query whose context is entirely masked has nothing to listen to: its output is the bias of the
        output projection alone (attention contributes zeros), never NaN.

        Args:
            x: (B, N, query_dim) queries, e.g. the image's N = H*W positions.
            context: (B, L, context_dim) keys and values, e.g. text tokens; None for self-attention.
            mask: (B, L) bool, True for context tokens that take part (False for padding).
            return_weights: also return the attention weights, computed with an explicit softmax.
        Returns:
            (B, N, query_dim), and with ``return_weights`` also the weights (B, heads, N, L).
        """
        self._check(x, context, mask)
        context = x if context is None else context
        B, N, L = x.shape[0], x.shape[1], context.shape[1]
        q = self.to_q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, d_head)
        k = self.to_k(context).reshape(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, L, d_head)
        v = self.to_v(context).reshape(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, L, d_head)
        weights = None
        if return_weights:
            weights = attention_weights(q, k, mask)  # (B, heads, N, L)
            out = weights @ v  # (B, heads, N, d_head)
        elif mask is None:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d_head)
        else:
            # The fused kernel returns NaN for a row with no key to attend to: let such rows see every key, then
            # zero their output, which is what attention_weights gives them.
            empty = ~mask.any(dim=1)  # (B,)
            keep = mask | empty[:, None]  # (B, L)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (B, heads, N, d_head)
            out = out.masked_fill(empty[:, None, None, None], 0.0)
        out = self.to_out(out.transpose(1, 2).reshape(B, N, -1))  # (B, N, query_dim)
        return (out, weights) if return_weights else out

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, context_dim={self.context_dim}, num_heads={self.num_heads}, " \
               f"head_dim={self.head_dim}"


class FeedForward(nn.Module):
    """The transformer's position-wise MLP with a GEGLU gate (Shazeer 2020, Eq. 6), as in the CompVis LDM.

    FFN(x) = (GELU(x W) * (x V)) W_2, with hidden width ``mult * dim``.

    Args:
        dim: D of the tokens.
        mult: hidden width as a multiple of D.
    """

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        h, gate = self.proj_in(x).chunk(2, dim=-1)  # (B, N, mult * D) each
        return self.proj_out(h * F.gelu(gate))


class SpatialTransformer(nn.Module):
    """A transformer block on an image's pixels that also reads a text context (Rombach et al. 2022, Sec. 3.3).

    x -> GroupNorm -> 1x1 conv in -> tokens (B, N, C) -> [x + SelfAttn(LN(x)); x + CrossAttn(LN(x), context);
    x + FF(LN(x))] -> 1x1 conv out -> + input. The output convolution starts at zero, so the untrained block is
    the identity and the UNet starts out as its unconditional self.

    Set ``recorded`` to a list (``record_attention`` does it) to append each call's cross-attention weights,
    (B, heads, L, H, W) on the CPU: for every text token, a map of the pixels that listen to it.

    Args:
        channels: C of the feature map.
        context_dim: D_c of the text context.
        num_heads: attention heads; C must be divisible by it.
        groups: GroupNorm groups.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 4, groups: int = 32):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention width {channels} is not divisible by num_heads={num_heads}; "
                             f"pick num_heads among the divisors of {channels}")
        self.norm = group_norm(channels, groups)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = CrossAttention(channels, None, num_heads)
        self.norm2 = nn.LayerNorm(channels)
        self.attn2 = CrossAttention(channels, context_dim, num_heads)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels)
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))
        self.recorded: list[Tensor] | None = None

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args:
            x: (B, C, H, W) features.
            context: (B, L, context_dim) text tokens.
            mask: (B, L) bool, True for real tokens, False for padding.
        Returns:
            (B, C, H, W).
        """
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B, N, C)
        h = h + self.attn1(self.norm1(h))
        if self.recorded is None:
            h = h + self.attn2(self.norm2(h), context, mask)
        else:
            out, weights = self.attn2(self.norm2(h), context, mask, return_weights=True)  # weights (B, h, N, L)
            self.recorded.append(weights.detach().transpose(2, 3).reshape(B, -1, context.shape[1], H, W).cpu())
            h = h + out
        h = h + self.ff(self.norm3(h))  # (B, N, C)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


@contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """Collect the cross-attention maps of every SpatialTransformer in ``model`` while the block runs.

    Example: ``with record_attention(unet) as maps: eps = unet(xt, t, context, mask)``; then
    ``maps["mid_attn"][0][b, :, l].mean(0)`` is the (H, W) map of token l of prompt b, averaged over heads.

    Yields:
        dict from module name to a list with one (B, heads, L, H, W) tensor per forward call, in call order.
    """
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, SpatialTransformer)}
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no SpatialTransformer, so there is no cross-attention to "
                         "record; build the UNet with UNetConfig(context_dim=...)")
    maps = {name: [] for name in blocks}
    for name, block in blocks.items():
        block.recorded = maps[name]
    try:
        yield maps
    finally:
        for block in blocks.values():
            block.recorded = None
