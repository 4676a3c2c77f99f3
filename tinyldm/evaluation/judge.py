"""A small classifier that judges Shapes images: what colour, shape, size and position, and is it a proper image?

Generated images cannot be scored against a caption until lesson 6, but they can be judged: a network trained
on real Shapes reads off the four attributes, and a fifth head says whether the picture is a valid Shapes image
at all (one object, well formed, in a palette colour). The "invalid" examples it learns from are made by spoiling
real images in the ways a weak generator fails: two objects, none, blur, noise, a broken shape, a shapeless blob,
a colour off the palette. Its penultimate features also give a FID for Shapes (as fast.ai's course measured FID
with a Fashion-MNIST classifier instead of Inception).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinyldm.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, Shapes
from tinyldm.pretrained import PretrainedMixin
from tinyldm.runtime import seeded
from tinyldm.training.diffusion_loop import lr_factor

__all__ = ["ATTRIBUTES", "NEGATIVE_KINDS", "JudgeConfig", "Judge", "attribute_targets", "spoil", "train_judge"]

ATTRIBUTES = {"color": tuple(COLORS), "shape": SHAPES, "size": tuple(SIZES), "position": POSITIONS}
NEGATIVE_KINDS = ("two_objects", "empty", "blur", "noise", "broken", "blob", "off_palette")
_PALETTE = torch.tensor(list(COLORS.values()), dtype=torch.float32)  # (6, 3) in 0-255
# Colours at least 70 levels (Euclidean, RGB) from every palette colour: cyan, pink, brown, near-black, white,
# teal, lime, navy.
_OFF_PALETTE = torch.tensor([(30, 200, 210), (240, 120, 190), (130, 80, 40), (30, 30, 30), (250, 250, 250),
                             (0, 128, 128), (170, 240, 50), (20, 30, 100)], dtype=torch.float32)


@dataclass
class JudgeConfig:
    """Hyperparameters of ``Judge``."""

    image_size: int = 32  # side the judge works at; other sizes are resized to it
    width: int = 16  # channels of the first stage; doubled at each of the three stages
    feature_dim: int = 128  # width of the penultimate features (used for FID)


class Judge(PretrainedMixin, nn.Module):
    """A CNN with five heads: colour (6), shape (4), size (2), position (9) and valid (1 logit).

    Three stages of two 3x3 convolutions (the second with stride 2) take 32x32 to 4x4; the flattened map keeps
    where things are, which the position head needs.

    Args:
        config: the hyperparameters; ``JudgeConfig()`` when None.
    """

    config_class = JudgeConfig

    def __init__(self, config: JudgeConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else JudgeConfig()
        if config.image_size % 8:
            raise ValueError(f"JudgeConfig.image_size must be a multiple of 8 (three stride-2 stages), "
                             f"got {config.image_size}")
        layers, c_in = [], 3
        for stage in range(3):
            c = config.width * 2**stage
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.body = nn.Sequential(*layers)
        side = config.image_size // 8
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, config.feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(config.feature_dim, len(values))
                                    for name, values in ATTRIBUTES.items()})
        self.valid = nn.Linear(config.feature_dim, 1)

    def _prepare(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"the judge takes RGB images (B, 3, H, W) in [-1, 1], got {shape}")
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            # Area averaging is the right way down (64 -> 32); bilinear is fine up.
            mode = "area" if images.shape[-1] > size else "bilinear"
            images = F.interpolate(images, size=(size, size), mode=mode)
        return images.clamp(-1, 1)

    def features(self, images: Tensor) -> Tensor:
        """The penultimate features: (B, 3, H, W) in [-1, 1] -> (B, feature_dim)."""
        return self.neck(self.body(self._prepare(images)))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Args:
            images: (B, 3, H, W) in [-1, 1].
        Returns:
            dict of logits: "color" (B, 6), "shape" (B, 4), "size" (B, 2), "position" (B, 9), "valid" (B,).
        """
        h = self.features(images)  # (B, feature_dim)
        logits = {name: head(h) for name, head in self.heads.items()}
        logits["valid"] = self.valid(h)[:, 0]
        return logits


def attribute_targets(attributes: list[dict[str, str]]) -> dict[str, Tensor]:
    """Class indices of each attribute: {"color": (B,), "shape": (B,), "size": (B,), "position": (B,)} int64."""
    return {name: torch.tensor([values.index(a[name]) for a in attributes]) for name, values in ATTRIBUTES.items()}


def _object_alpha(u: Tensor) -> tuple[Tensor, Tensor]:
    """Coverage of the object and the background behind it, from 0-255 images (B, 3, H, W).

    The background is grey (R = G = B) and the objects are saturated, so colourfulness max(RGB) - min(RGB)
    divided by the object's own is a good alpha mask. The background is a plane a + b x + c y fitted by least
    squares to the pixels the object does not touch. Returns alpha (B, 1, H, W) and background (B, 1, H, W).
    """
    B, _, H, W = u.shape
    chroma = u.amax(1, keepdim=True) - u.amin(1, keepdim=True)  # (B, 1, H, W)
    alpha = (chroma / chroma.amax((2, 3), keepdim=True).clamp(min=1)).clamp(0, 1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    basis = torch.stack([torch.ones(H * W), xs.flatten(), ys.flatten()], 1)  # (N, 3)
    weight = (alpha < 0.02).float().flatten(1)  # (B, N) background pixels
    grey = u.mean(1).flatten(1)  # (B, N)
    normal = torch.einsum("bn,ni,nj->bij", weight, basis, basis) + 1e-3 * torch.eye(3)  # (B, 3, 3)
    coef = torch.linalg.solve(normal, torch.einsum("bn,ni,bn->bi", weight, basis, grey))  # (B, 3)
    background = (coef @ basis.T).view(B, 1, H, W)
    return alpha, background


def spoil(images: Tensor, kind: str, generator: torch.Generator, partners: Tensor | None = None) -> Tensor:
    """Turn real Shapes images into invalid ones of one ``kind`` (see ``NEGATIVE_KINDS``).

    Args:
        images: (B, 3, H, W) real images in [-1, 1].
        kind: "two_objects" (needs ``partners``), "empty", "blur", "noise", "broken", "blob" or "off_palette".
        generator: CPU generator for the random choices.
        partners: (B, 3, H, W) other real images whose objects are pasted in for "two_objects".
    Returns:
        (B, 3, H, W) in [-1, 1].
    """
    B, _, H, W = images.shape
    u = (images + 1) * 127.5  # (B, 3, H, W) in 0-255
    alpha, bg = _object_alpha(u)
    empty = torch.where(alpha > 0.02, bg, u)  # the object painted over with the background
    if kind == "two_objects":
        if partners is None:
            raise ValueError("spoil(kind='two_objects') needs partners: real images whose objects are pasted in")
        v = (partners + 1) * 127.5
        alpha_b, _ = _object_alpha(v)
        out = u * (1 - alpha_b) + v * alpha_b
    elif kind == "empty":
        out = empty
    elif kind == "blur":
        sigma = 1.0 + 1.5 * torch.rand(1, generator=generator).item()
        radius = math.ceil(3 * sigma)
        taps = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma**2))
        taps = (taps / taps.sum()).to(u)
        padded = F.pad(u, (radius, radius, radius, radius), mode="replicate")
        out = F.conv2d(F.conv2d(padded.reshape(-1, 1, *padded.shape[-2:]), taps.view(1, 1, 1, -1)),
                       taps.view(1, 1, -1, 1)).reshape(B, 3, H, W)
    elif kind == "noise":
        sigma = 0.2 + 0.4 * torch.rand(B, 1, 1, 1, generator=generator)
        out = u + 127.5 * sigma * torch.randn(u.shape, generator=generator)
    elif kind == "broken":
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                                indexing="ij")
        mass = alpha.sum((2, 3)).clamp(min=1e-3)  # (B, 1)
        cy = (alpha[:, 0] * ys).sum((1, 2)) / mass[:, 0]  # (B,) centroid of the object
        cx = (alpha[:, 0] * xs).sum((1, 2)) / mass[:, 0]
        angle = 2 * math.pi * torch.rand(B, generator=generator)
        offset = (torch.rand(B, generator=generator) - 0.5) * 0.4 * math.sqrt(H * W) * alpha.mean((1, 2, 3)).sqrt()
        side = ((xs - cx[:, None, None]) * angle.cos()[:, None, None]
                + (ys - cy[:, None, None]) * angle.sin()[:, None, None] > offset[:, None, None])  # (B, H, W)
        out = torch.where(side[:, None] & (alpha > 0.02), bg, u)
    elif kind == "blob":
        field = torch.randn(B, 1, 5, 5, generator=generator)
        field = F.interpolate(field, size=(H, W), mode="bicubic", align_corners=False)  # smooth random field
        area = 0.03 + 0.15 * torch.rand(B, 1, 1, 1, generator=generator)
        level = torch.quantile(field.flatten(1), 1 - area.flatten(), dim=1).diagonal()  # (B,)
        sharpness = 4 + 26 * torch.rand(B, 1, 1, 1, generator=generator)  # soft to crisp edges
        blob = ((field - level[:, None, None, None]) * sharpness).sigmoid()
        colour = _PALETTE[torch.randint(0, len(_PALETTE), (B,), generator=generator)][:, :, None, None]
        out = empty * (1 - blob) + colour * blob
    elif kind == "off_palette":
        colour = _OFF_PALETTE[torch.randint(0, len(_OFF_PALETTE), (B,), generator=generator)]  # (B, 3)
        colour = colour + torch.randint(-10, 11, (B, 3), generator=generator)
        out = bg * (1 - alpha) + colour[:, :, None, None] * alpha
    else:
        raise ValueError(f"unknown kind {kind!r}; use one of {NEGATIVE_KINDS}")
    return (out.round().clamp(0, 255) / 127.5 - 1).to(images.dtype)


def _negatives(images: Tensor, positions: Tensor, generator: torch.Generator) -> Tensor:
    """One spoiled copy of every image, the kinds dealt out in turn."""
    B = images.shape[0]
    kinds = torch.arange(B) % len(NEGATIVE_KINDS)
    out = images.clone()
    shift = 1 + int(torch.randint(0, B - 1, (1,), generator=generator)) if B > 1 else 0
    partners = images.roll(shift, 0)
    partner_pos = positions.roll(shift, 0)
    for k, kind in enumerate(NEGATIVE_KINDS):
        sel = kinds == k
        if kind == "two_objects":
            sel &= positions != partner_pos  # two objects in one cell could hide each other
        if sel.any():
            out[sel] = spoil(images[sel], kind, generator, partners[sel] if kind == "two_objects" else None)
    return out


def train_judge(num_images: int = 8192, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                config: JudgeConfig | None = None, device: torch.device | None = None,
                progress: bool = True) -> tuple[Judge, list[float]]:
    """Train the judge on real Shapes (every colour-shape pair, the held-out ones included) and spoiled copies.

    Each step sees ``batch_size`` real images (cross-entropy on the four attributes, valid = 1) and as many
    spoiled ones (valid = 0); AdamW with warm-up and cosine decay.

    Returns:
        the judge (eval mode) and the loss at every step.
    """
    config = config or JudgeConfig()
    device = device or torch.device("cpu")
    size = config.image_size
    held = max(1, num_images // 6)  # the 4 held-out pairs of 24 get their share
    sets = [Shapes(num_images - held, size=size, seed=seed + 1000, split="train"),
            Shapes(held, size=size, seed=seed + 1000, split="heldout")]
    items = [d[i] for d in sets for i in range(len(d))]
    images = torch.stack([it["image"] for it in items])  # (N, 3, size, size)
    targets = attribute_targets([it["attributes"] for it in items])
    with seeded(seed):
        judge = Judge(config).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k, steps // 20, steps))
    losses = []
    judge.train()
    for _ in tqdm(range(steps), desc="judge", disable=not progress):
        index = torch.randint(0, len(items), (batch_size,), generator=generator)
        real = images[index]
        fake = _negatives(real, targets["position"][index], generator)
        logits = judge(torch.cat([real, fake]).to(device))
        loss = sum(F.cross_entropy(logits[name][:batch_size], targets[name][index].to(device))
                   for name in ATTRIBUTES)
        valid = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)]).to(device)
        loss = loss + F.binary_cross_entropy_with_logits(logits["valid"], valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return judge.eval(), losses
