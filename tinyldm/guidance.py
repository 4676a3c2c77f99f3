"""Classifier-free guidance (Ho & Salimans 2022): one network learns both p(x | caption) and p(x), and sampling
pushes its prediction away from the unconditional one, towards images that fit the caption better.

Training drops the caption of a random fraction p_uncond of images, replacing it with the null caption (the empty
string, ``NULL_CAPTION``), so the same network also predicts eps(z_t) without text (Algorithm 1). Sampling mixes
the two predictions (Eq. 6, with guidance scale s = 1 + w):

    eps_guided = eps(z_t) + s * (eps(z_t, c) - eps(z_t))

s = 1 is the plain conditional model, s = 0 the unconditional one, s > 1 trades diversity for fidelity.
``ClassifierFreeGuidance`` wraps a conditional model into the ``model(xt, t)`` callable that ``ddpm_sample`` and
``ddim_sample`` take, so the samplers stay unchanged. This lives apart from ``tinyldm.sampling`` because it is not a
sampler: it changes the model the samplers call.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["NULL_CAPTION", "drop_captions", "guided_eps", "pad_context", "ClassifierFreeGuidance"]

NULL_CAPTION = ""  # the unconditional "caption"; encode it with encoder.encode_null or encode(..., allow_empty=True)


def drop_captions(captions: Sequence[str], p_uncond: float, generator: torch.Generator | None = None) -> list[str]:
    """Replace each caption by NULL_CAPTION with probability ``p_uncond`` (Ho & Salimans 2022, Algorithm 1, line 3).

    Args:
        captions: one caption per training image.
        p_uncond: probability of dropping a caption, in [0, 1]; the paper found 0.1-0.2 works well.
        generator: source of the coin flips (on the CPU).
    Returns:
        The captions, some replaced by "".
    """
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must lie in [0, 1] (the chance of training a caption as unconditional), "
                         f"got {p_uncond}")
    captions = list(captions)
    drop = (torch.rand(len(captions), generator=generator) < p_uncond).tolist()
    return [NULL_CAPTION if d else c for c, d in zip(captions, drop)]


def guided_eps(eps_cond: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """Mix conditional and unconditional noise predictions (Ho & Salimans 2022, Eq. 6, with s = 1 + w).

    Args:
        eps_cond: (B, ...) eps(z_t, c).
        eps_uncond: (B, ...) eps(z_t).
        scale: s; 1 gives eps_cond, 0 gives eps_uncond.
    Returns:
        (B, ...) eps_uncond + s (eps_cond - eps_uncond).
    """
    # Ho & Salimans 2022, Eq. 6: (1 + w) eps(z, c) - w eps(z), rewritten with s = 1 + w
    return eps_uncond + scale * (eps_cond - eps_uncond)


def pad_context(context: Tensor, mask: Tensor | None, length: int) -> tuple[Tensor, Tensor]:
    """Pad a context to ``length`` tokens with zeros that the mask hides.

    Args:
        context: (B, L, D) tokens, L <= length.
        mask: (B, L) bool, or None for all real.
        length: the target L'.
    Returns:
        context (B, L', D) and mask (B, L') bool, False on the new positions.
    """
    B, L, _ = context.shape
    if mask is None:
        mask = torch.ones(B, L, dtype=torch.bool, device=context.device)
    return F.pad(context, (0, 0, 0, length - L)), F.pad(mask, (0, length - L), value=False)


class ClassifierFreeGuidance:
    """``model(xt, t)`` that returns the guided noise prediction of a text-conditioned model (Ho & Salimans 2022).

    Conditional and unconditional predictions come from one forward pass over a 2B batch (the contexts padded to a
    common length, padding masked), conditional half first, so attention maps recorded while it runs
    (``record_attention``) hold the prompts in rows 0..B-1; scale 1 and 0 need only one of the two and skip the other.

    Args:
        model: called as ``model(xt, t, context, context_mask)``, e.g. a UNet with ``context_dim``.
        context: (B, L, D) the prompts' encoding.
        null_context: (B, L0, D) or (1, L0, D) the null caption's encoding (``encoder.encode_null``).
        scale: guidance scale s >= 0 (Eq. 6 with s = 1 + w).
        context_mask: (B, L) bool, True for real tokens; None for all real.
        null_mask: (B, L0) or (1, L0) bool; None for all real.
    """

    def __init__(self, model: Callable[..., Tensor], context: Tensor, null_context: Tensor, scale: float,
                 context_mask: Tensor | None = None, null_mask: Tensor | None = None):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"guidance scale must be a finite number >= 0 (1 = no guidance, 3-8 typical), "
                             f"got {scale!r}")
        for name, value in (("context", context), ("null_context", null_context)):
            if not isinstance(value, Tensor) or value.ndim != 3:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{name} must be a (B, L, D) tensor from a text encoder, got {shape}")
        B = context.shape[0]
        if null_context.shape[0] not in (1, B) or null_context.shape[2] != context.shape[2]:
            raise ValueError(f"null_context must have shape (1 or {B}, L0, {context.shape[2]}) like context "
                             f"{tuple(context.shape)}, got {tuple(null_context.shape)}")
        if null_context.shape[0] == 1 and B > 1:
            null_context = null_context.expand(B, -1, -1)
            null_mask = None if null_mask is None else null_mask.expand(B, -1)
        self.model, self.scale = model, float(scale)
        self.context, self.context_mask = context, context_mask
        self.null_context, self.null_mask = null_context, null_mask

    def __call__(self, xt: Tensor, t: Tensor) -> Tensor:
        """Args:
            xt: (B, ...) the current samples, one per prompt.
            t: (B,) int64 step indices.
        Returns:
            (B, ...) the guided eps prediction.
        """
        B = self.context.shape[0]
        if xt.shape[0] != B:
            raise ValueError(f"xt holds {xt.shape[0]} samples but the guidance has {B} prompts; draw one sample per "
                             "prompt (repeat a prompt to get several samples of it)")
        if self.scale == 1:
            return self.model(xt, t, self.context, self.context_mask)
        if self.scale == 0:
            return self.model(xt, t, self.null_context, self.null_mask)
        length = max(self.context.shape[1], self.null_context.shape[1])
        context, mask = pad_context(self.context, self.context_mask, length)  # (B, L', D), (B, L')
        null, null_mask = pad_context(self.null_context, self.null_mask, length)
        eps = self.model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([context, null]),
                         torch.cat([mask, null_mask]))  # (2B, ...)
        eps_cond, eps_uncond = eps.chunk(2)
        return guided_eps(eps_cond, eps_uncond, self.scale)
