"""Photo crops: square crops of the photographs that ship inside scikit-image, for an autoencoder to learn texture.

Shapes are flat colours on a smooth background: nothing there that an 8x8x4 latent cannot store. Photographs have
what a pixel loss blurs away: grass, gravel, fur, brick, the grain of a sky. scikit-image ships a few of them in its
wheel (``skimage.data``), so they need no download; the ones used here are read from the wheel, never fetched.

The split is by photograph, not by crop, so the test photographs are never seen in training:

- **train** (``TRAIN_PHOTOS``): astronaut, brick, camera, coffee, coins, grass, hubble_deep_field,
  immunohistochemistry, moon, motorcycle_left, retina;
- **test** (``TEST_PHOTOS``): chelsea (fur), gravel (a stochastic texture), rocket (a smooth evening sky).

Grey photographs (brick, camera, coins, grass, gravel, moon) become three equal channels. Item i is a crop of a
photograph drawn uniformly from the split: the photograph is rescaled by a random factor in ``scale`` (log-uniform;
an anti-aliased bicubic resize of the crop's region, the same as rescaling the whole photograph first), a square of
``size`` pixels is cut at a uniformly random place, and flipped left-right with probability 1/2 when ``flip``.

With ``permute_colours`` the crop's three colour channels are put in one of their six orders, drawn uniformly
(the identity included). Eleven photographs hold few hues: without it an autoencoder trained on them has never seen
the dark blue of rocket's evening sky and paints it near-black. Permuting the channels turns the brown of the coffee
and the orange of the retina into blues and greens while keeping every edge and texture; the training crops of
``--data photos`` use it, the test crops keep their natural colours.

Reproducibility: the draws come from CPU generators seeded by (seed, split, chunk of 256 items), so item i does not
depend on n, and the crops are quantised to 8 bits like a saved picture: the same arguments give the same tensors.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from tinyldm.data.indexing import check_index

__all__ = ["PHOTOGRAPHS", "TRAIN_PHOTOS", "TEST_PHOTOS", "SPLITS", "DEFAULT_SCALE", "INSTALL", "load_photograph",
           "photographs_sha256", "PhotoCrops", "photos_tensor"]

# What each photograph shows, for the captions; every one of them is inside scikit-image's wheel.
PHOTOGRAPHS = {
    "astronaut": "an astronaut in an orange suit",
    "brick": "a brick wall",
    "camera": "a cameraman on a lawn",
    "chelsea": "a tabby cat",
    "coffee": "a cup of coffee on a wooden table",
    "coins": "old coins on a dark cloth",
    "grass": "grass",
    "gravel": "gravel",
    "hubble_deep_field": "galaxies in the Hubble deep field",
    "immunohistochemistry": "stained tissue under a microscope",
    "moon": "the surface of the moon",
    "motorcycle_left": "a red motorcycle in a garage",
    "retina": "the back of a human eye",
    "rocket": "a rocket on its launch pad under an evening sky",
}
# The test split keeps one photograph of each thing a pixel loss blurs: fur, a stochastic texture and a sky. Grass
# stays in training (with brick, the lawn of camera and the stained tissue) so that training sees such texture too.
TEST_PHOTOS = ("chelsea", "gravel", "rocket")
TRAIN_PHOTOS = tuple(name for name in PHOTOGRAPHS if name not in TEST_PHOTOS)
SPLITS = ("train", "test")
DEFAULT_SCALE = (0.5, 1.0)  # rescale range: at 0.5 a 32x32 crop covers 64x64 pixels of the photograph
INSTALL = "pip install scikit-image"

_CHUNK = 256  # draws are made in fixed chunks of items, so that item i does not depend on n
_DRAWS = 5  # per item: photograph, scale, top, left, flip
_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))  # the orders of R, G, B


def _skimage_data():
    """``skimage.data``, imported here so that ``import tinyldm`` works without scikit-image."""
    try:
        import skimage.data
    except ImportError:
        raise ModuleNotFoundError(f"the photo crops need scikit-image, which ships the photographs; install it with "
                                  f"`{INSTALL}` (it is a dependency of tinyldm: `make setup` installs it)",
                                  name="skimage") from None
    return skimage.data


@functools.lru_cache(maxsize=None)
def _photograph(name: str) -> Tensor:
    data = _skimage_data()
    # The stereo pair's left view; its right view is nearly the same picture and would only count it twice.
    array = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    image = torch.from_numpy(array.copy())
    if image.dtype != torch.uint8:
        raise ValueError(f"scikit-image's {name} is {image.dtype}, not uint8; this version of scikit-image is not "
                         f"the one tinyldm knows: `pip install -c constraints.txt scikit-image`")
    if image.ndim == 2:
        image = image[:, :, None].expand(-1, -1, 3)  # grey: the same value in all three channels
    return image[:, :, :3].permute(2, 0, 1).contiguous()  # (3, H, W)


def load_photograph(name: str) -> Tensor:
    """One of ``PHOTOGRAPHS`` from scikit-image's wheel, as uint8 (3, H, W); grey ones get three equal channels."""
    if name not in PHOTOGRAPHS:
        raise ValueError(f"unknown photograph {name!r}; use one of {tuple(PHOTOGRAPHS)}")
    return _photograph(name).clone()


def photographs_sha256(split: str) -> str:
    """SHA-256 of the split's photographs (names, shapes and pixels, in order): names the exact pixels the crops
    come from, e.g. in a cache key, whatever scikit-image version supplied them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for the photo crops; use one of {SPLITS}")
    digest = hashlib.sha256()
    for name in TRAIN_PHOTOS if split == "train" else TEST_PHOTOS:
        photo = _photograph(name)
        digest.update(f"{name}{tuple(photo.shape)}".encode())
        digest.update(photo.numpy().tobytes())
    return digest.hexdigest()


def _check_int(name: str, value, minimum: int | None, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}; {fix}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; {fix}")
    return int(value)


def _check_scale(scale) -> tuple[float, float]:
    try:
        low, high = (float(s) for s in scale)
    except (TypeError, ValueError):
        raise TypeError(f"scale must be a pair (low, high) of numbers, got {scale!r}; e.g. scale=(0.5, 1.0)") from None
    if not 0 < low <= high <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1 (crops are never enlarged, which would blur "
                         f"them), got {scale!r}; e.g. scale=(0.5, 1.0), or (1.0, 1.0) for no rescale")
    return low, high


def _chunk_generator(seed: int, split: str, chunk: int) -> torch.Generator:
    """A CPU generator for one chunk of one split, seeded by a hash so that different chunks never overlap."""
    key = f"tinyldm.photos/{seed}/{split}/{chunk}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


class PhotoCrops(Dataset):
    """Random square crops of the photographs of one split: item i is a dict with "image", "caption", "attributes".

    Args:
        n: number of items.
        size: S, the crop's side in pixels (32 by default, 64 for the ``full`` presets).
        seed: the dataset's seed; the same arguments give the same item i on every run.
        split: "train" (``TRAIN_PHOTOS``) or "test" (``TEST_PHOTOS``).
        scale: (low, high), the range of the random rescale, 0 < low <= high <= 1; (1, 1) cuts at full resolution.
        flip: flip half of the crops left-right.
        permute_colours: put each crop's colour channels in a random one of their six orders.

    Item:
        image: float32 (3, S, S) in [-1, 1], 8-bit levels.
        caption: str naming the photograph, e.g. "a photograph of a tabby cat (chelsea)".
        attributes: {"photo": name, "top": int, "left": int, "side": int, "flipped": bool, "channels": (c0, c1,
            c2)}: the square of the original photograph (before the rescale) that the crop shows, whether it was
            flipped, and which original channel each of its channels holds ((0, 1, 2) unless permuted).
    """

    def __init__(self, n: int, size: int = 32, seed: int = 0, split: str = "train",
                 scale: tuple[float, float] = DEFAULT_SCALE, flip: bool = True, permute_colours: bool = False) -> None:
        self.n = _check_int("n", n, 1, "pass the number of crops, e.g. PhotoCrops(1024)")
        self.size = _check_int("size", size, 1, "pass the crop's side in pixels, e.g. size=32")
        self.seed = _check_int("seed", seed, None, "pass an integer seed, e.g. seed=0")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for the photo crops; use one of {SPLITS}")
        self.split = split
        self.scale = _check_scale(scale)
        self.flip = bool(flip)
        self.permute_colours = bool(permute_colours)
        self.photos = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
        low = self.scale[0]
        shorter = {name: min(_photograph(name).shape[1:]) for name in self.photos}  # shorter side of each
        name = min(shorter, key=shorter.get)
        fits = math.floor(low * shorter[name])  # the smallest photograph's shorter side after the strongest rescale
        if fits < self.size:
            height, width = _photograph(name).shape[1:]
            fix = f"use a crop size of at most {fits} for the {split} split"
            if self.size <= shorter[name]:
                start = math.ceil(100 * self.size / shorter[name]) / 100
                fix += f", or a rescale range that starts higher, e.g. scale=({start:g}, 1.0)"
            raise ValueError(f"a {self.size}x{self.size} crop does not fit the photograph {name} ({height}x{width}) "
                             f"rescaled by {low:g}: its shorter side is then {fits} pixels; {fix}")
        chunks = -(-self.n // _CHUNK)
        generators = [_chunk_generator(self.seed, split, c) for c in range(chunks)]
        self._draws = torch.cat([torch.rand(_CHUNK, _DRAWS, generator=g, dtype=torch.float64)
                                 for g in generators])  # (chunks * 256, 5)
        # Drawn after the others, so that the crops themselves are the same with and without permute_colours.
        self._orders = torch.cat([torch.randint(len(_PERMUTATIONS), (_CHUNK,), generator=g)
                                  for g in generators])  # (chunks * 256,)

    def __len__(self) -> int:
        return self.n

    def _crop(self, i: int) -> tuple[Tensor, dict]:
        """Item i as uint8 (3, S, S) and its attributes."""
        u = self._draws[i].tolist()
        name = self.photos[min(int(u[0] * len(self.photos)), len(self.photos) - 1)]
        photo = _photograph(name)  # (3, H, W)
        _, height, width = photo.shape
        low, high = self.scale
        s = low * (high / low) ** u[1]  # log-uniform in [low, high]
        side = min(round(self.size / s), height, width)  # the square of the original that becomes the crop
        top = min(int(u[2] * (height - side + 1)), height - side)
        left = min(int(u[3] * (width - side + 1)), width - side)
        crop = photo[:, top:top + side, left:left + side]
        if side != self.size:
            resized = F.interpolate(crop[None].float(), size=(self.size, self.size), mode="bicubic",
                                    align_corners=False, antialias=True)[0]  # (3, S, S)
            crop = resized.round().clamp(0, 255).to(torch.uint8)
        flipped = self.flip and u[4] < 0.5
        if flipped:
            crop = crop.flip(-1)
        channels = _PERMUTATIONS[int(self._orders[i])] if self.permute_colours else _PERMUTATIONS[0]
        if self.permute_colours:
            crop = crop[list(channels)]
        return crop, {"photo": name, "top": top, "left": left, "side": side, "flipped": flipped,
                      "channels": channels}

    def __getitem__(self, index: int) -> dict:
        i = check_index(index, self.n, "PhotoCrops")
        crop, attributes = self._crop(i % self.n)
        return {
            "image": crop.float() / 127.5 - 1,  # (3, S, S) in [-1, 1]
            "caption": f"a photograph of {PHOTOGRAPHS[attributes['photo']]} ({attributes['photo']})",
            "attributes": attributes,
        }

    def __repr__(self) -> str:
        return (f"PhotoCrops(n={self.n}, size={self.size}, seed={self.seed}, split={self.split!r}, "
                f"scale={self.scale}, flip={self.flip}, permute_colours={self.permute_colours})")


def photos_tensor(num_images: int, size: int = 32, seed: int = 0, split: str = "train",
                  scale: tuple[float, float] = DEFAULT_SCALE, flip: bool = True, permute_colours: bool = False
                  ) -> Tensor:
    """The first ``num_images`` photo crops as one tensor (num_images, 3, size, size) in [-1, 1]."""
    dataset = PhotoCrops(num_images, size=size, seed=seed, split=split, scale=scale, flip=flip,
                         permute_colours=permute_colours)
    return torch.stack([dataset[i]["image"] for i in range(num_images)])
