"""Training masks for an inpainting model: where the hole is, drawn per item from a seed.

An inpainting model (Rombach et al. 2022, Sec. 4.5; Stable Diffusion's inpainting model) learns to fill a hole
from the rest of the image and the caption. It sees many kinds of holes in training, so that it fills whatever a
user paints: random boxes, blobs (a few overlapping discs), a box around the object of a Shapes image (so that it
learns to draw the caption's object where it is asked to), and now and then the whole image (so that it can also
draw from nothing, as the text-to-image model it started from).

A mask is 1 in the hole (the pixels to generate) and 0 where the image is kept, at pixel resolution,
(B, 1, H, W). Item i's mask depends only on (seed, i) and its image, never on the batch around it.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

__all__ = ["MASK_KINDS", "MASK_WEIGHTS", "object_boxes", "object_holes", "inpainting_masks"]

MASK_KINDS = ("object", "box", "blob", "whole")
MASK_WEIGHTS = (0.4, 0.25, 0.25, 0.1)  # how often each kind is drawn
_SATURATION = 0.1  # max - min over RGB (in [-1, 1]) above which a pixel belongs to the object: the background is grey


def _item_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for item ``index`` alone, seeded by a hash so that neighbouring items do not overlap."""
    digest = hashlib.sha256(f"tinyldm.masks/{seed}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def object_boxes(images: Tensor) -> Tensor:
    """The bounding box of each image's coloured pixels (a Shapes object on its grey background).

    Args:
        images: (B, 3, H, W) in [-1, 1].
    Returns:
        (B, 4) int64 boxes (top, left, bottom, right), bottom and right exclusive; the whole image where no pixel
        is coloured.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor in [-1, 1], got {shape}")
    B, _, H, W = images.shape
    coloured = (images.amax(1) - images.amin(1)) > _SATURATION  # (B, H, W)
    rows, cols = coloured.any(2), coloured.any(1)  # (B, H), (B, W)
    boxes = torch.tensor([[0, 0, H, W]], dtype=torch.int64).repeat(B, 1)
    for b in range(B):
        r, c = rows[b].nonzero().flatten(), cols[b].nonzero().flatten()
        if len(r):
            boxes[b] = torch.stack([r.min(), c.min(), r.max() + 1, c.max() + 1])
    return boxes


def object_holes(images: Tensor, margin: int = 2) -> Tensor:
    """Masks that cover each image's object: its box (``object_boxes``) widened by ``margin`` pixels on every side,
    clipped to the image. The hole of lesson 8's and the benchmark's object replacements.

    Args:
        images: (B, 3, H, W) in [-1, 1].
    Returns:
        (B, 1, H, W) float, 1 in the hole.
    """
    B, _, H, W = images.shape
    holes = torch.zeros(B, 1, H, W)
    for b, (top, left, bottom, right) in enumerate(object_boxes(images).tolist()):
        holes[b, 0, max(0, top - margin):bottom + margin, max(0, left - margin):right + margin] = 1
    return holes


def _draw(kind: str, image: Tensor | None, g: torch.Generator, H: int, W: int) -> Tensor:
    """One mask (H, W) of ``kind``, drawn from ``g``."""
    mask = torch.zeros(H, W)
    if kind == "whole":
        mask[:] = 1
    elif kind == "object":
        top, left, bottom, right = object_boxes(image[None])[0].tolist()
        margin = torch.randint(1, 5, (4,), generator=g).tolist()  # 1-4 pixels of background around the object
        mask[max(0, top - margin[0]):bottom + margin[1], max(0, left - margin[2]):right + margin[3]] = 1
    elif kind == "box":
        h, w = (int(v) for v in torch.randint(H // 6, H * 3 // 4 + 1, (2,), generator=g))
        y, x = int(torch.randint(0, H - h + 1, (1,), generator=g)), int(torch.randint(0, W - w + 1, (1,), generator=g))
        mask[y:y + h, x:x + w] = 1
    else:  # blob: 2-4 overlapping discs around one centre
        ys, xs = torch.arange(H, dtype=torch.float32)[:, None] + 0.5, torch.arange(W, dtype=torch.float32) + 0.5
        centre = torch.rand(2, generator=g) * torch.tensor([H, W]) * 0.6 + torch.tensor([H, W]) * 0.2
        for _ in range(int(torch.randint(2, 5, (1,), generator=g))):
            cy, cx = (centre + (torch.rand(2, generator=g) - 0.5) * min(H, W) / 3).tolist()
            r = float(torch.rand(1, generator=g)) * min(H, W) / 8 + min(H, W) / 10
            mask[(ys - cy) ** 2 + (xs - cx) ** 2 <= r * r] = 1
    return mask


def inpainting_masks(images: Tensor, seed: int = 0, offset: int = 0,
                     weights: tuple[float, ...] = MASK_WEIGHTS) -> Tensor:
    """One training mask per image: an object box, a random box, a blob or the whole image.

    Item i's kind and shape come from a generator seeded with (seed, offset + i) alone, so a mask does not depend
    on the batch it is drawn in, and the same seed gives the same masks on every machine.

    Args:
        images: (B, 3, H, W) in [-1, 1]; the "object" kind boxes each image's coloured pixels (``object_boxes``).
        seed: the masks' seed.
        offset: the index of the first item (draw masks in pieces with the same result as in one call).
        weights: the probabilities of MASK_KINDS, in that order.
    Returns:
        (B, 1, H, W) float32 masks, 1 in the hole and 0 where the image is kept.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor in [-1, 1], got {shape}")
    if len(weights) != len(MASK_KINDS) or min(weights) < 0 or not sum(weights) > 0:
        raise ValueError(f"weights must be {len(MASK_KINDS)} non-negative numbers, one per kind of {MASK_KINDS}, "
                         f"not all zero; got {weights!r}")
    probabilities = torch.tensor(weights, dtype=torch.float64)
    B, _, H, W = images.shape
    masks = torch.empty(B, 1, H, W)
    for b in range(B):
        g = _item_generator(seed, offset + b)
        kind = MASK_KINDS[int(torch.multinomial(probabilities, 1, generator=g))]
        masks[b, 0] = _draw(kind, images[b], g, H, W)
    return masks
