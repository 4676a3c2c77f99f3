"""Captioned Shapes: the course's default text-to-image dataset, generated offline in milliseconds.

Each image shows one coloured shape on a light-grey background, and its caption says what and where it is:
"a large red circle at the top left". Four colour-shape pairs (``HELD_OUT``) never appear in the training split,
so a text-conditioned model can be tested on compositions it has never seen (compositional generalisation).

Reproducibility: the random draws are uniform (``torch.randint``, ``torch.rand``) from explicit CPU generators,
and rendering uses only +, -, *, / and comparisons, so the same arguments give the same bytes on every machine.
"""

import hashlib
import numbers
import re

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from tinyldm.data.indexing import check_index

__all__ = [
    "COLORS", "SHAPES", "SIZES", "POSITIONS", "HELD_OUT", "SPLITS", "MIN_SIZE",
    "Shapes", "shapes_tensor", "caption", "parse_caption", "changed_captions", "render",
]

COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 205, 30),
    "green": (40, 170, 70),
    "blue": (40, 90, 220),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.25, "large": 0.45}  # bounding-box side as a fraction of the image side
# Row-major over the 3x3 grid.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
HELD_OUT = frozenset({("blue", "triangle"), ("red", "square"), ("yellow", "diamond"), ("green", "circle")})
SPLITS = ("train", "test", "heldout")
# Small objects are 0.25*size wide; below 16 pixels they are under 4 pixels and a triangle looks like a diamond.
MIN_SIZE = 16

_WHERE = {p: ("in the " if p == "center" else "on the " if p in ("left", "right") else "at the ") + p
          for p in POSITIONS}  # position -> caption phrase, e.g. "left" -> "on the left"
_KEYS = ("color", "shape", "size", "position")
_CAPTION_RE = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) ({'|'.join(_WHERE.values())})"
)
_PHRASE_TO_POSITION = {phrase: p for p, phrase in _WHERE.items()}

_JITTER = 10  # colour jitter per channel, in 0-255 levels
_SIZE_JITTER = 0.1  # relative jitter of the bounding-box side
_BG_RANGE = (196.0, 224.0)  # grey level of the background centre
_BG_SLOPE = 12.0  # at most this many grey levels of change from the centre to an edge, per axis
_BG_CANONICAL = 210.0
_SUPERSAMPLE = 4  # 4x4 samples per pixel
_RASTER_BUDGET = 1 << 21  # supersampled points per rasterisation batch: about 8 MB of float32
_CHUNK = 256  # the dataset draws and renders items in fixed chunks, so item i does not depend on n


def _check_int(name: str, value, minimum: int | None, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}; {fix}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; {fix}")
    return int(value)


def _check_size(size) -> int:
    return _check_int(
        "size", size, MIN_SIZE,
        f"small objects are 0.25*size pixels wide and need at least 4 pixels to tell a triangle from a diamond, "
        f"so use size >= {MIN_SIZE} (32 is the course default)",
    )


def _check_attributes(attributes) -> None:
    if not isinstance(attributes, dict):
        raise TypeError(f"attributes must be a dict with keys {_KEYS}, got {type(attributes).__name__}: {attributes!r}")
    if set(attributes) != set(_KEYS):
        raise ValueError(f"attributes must have exactly the keys {_KEYS}, got {tuple(attributes)}; "
                         f"e.g. {{'color': 'red', 'shape': 'circle', 'size': 'large', 'position': 'center'}}")
    for key, valid in zip(_KEYS, (COLORS, SHAPES, SIZES, POSITIONS)):
        if attributes[key] not in valid:
            raise ValueError(f"unknown {key} {attributes[key]!r} in {attributes}; use one of {tuple(valid)}")


def caption(attributes: dict[str, str]) -> str:
    """Write the caption for one object, e.g. "a large red circle at the top left".

    Args:
        attributes: dict with keys color, shape, size, position (values from COLORS, SHAPES, SIZES, POSITIONS).

    Returns:
        The caption, following the grammar ``a {size} {color} {shape} {where}``.
    """
    _check_attributes(attributes)
    a = attributes
    return f"a {a['size']} {a['color']} {a['shape']} {_WHERE[a['position']]}"


def changed_captions(attributes: list[dict[str, str]], key: str, seed: int = 0) -> list[str]:
    """For each image's attributes, the caption with ``key`` changed to another value drawn from ``seed``: the
    prompts of an edit that changes one thing (lesson 8). A change never makes a held-out colour-shape pair.

    Args:
        attributes: one dict per image (keys color, shape, size, position).
        key: "color", "shape", "size" or "position".
    Returns:
        one caption per image.
    """
    values = dict(zip(_KEYS, (COLORS, SHAPES, SIZES, POSITIONS)))
    if key not in values:
        raise ValueError(f"key must be one of {_KEYS}, got {key!r}")
    generator = torch.Generator().manual_seed(seed)
    captions = []
    for a in attributes:
        options = [v for v in values[key] if v != a[key]
                   and ({**a, key: v}["color"], {**a, key: v}["shape"]) not in HELD_OUT]
        captions.append(caption({**a, key: options[int(torch.randint(len(options), (1,), generator=generator))]}))
    return captions


def parse_caption(text: str) -> dict[str, str]:
    """Recover the attributes from a caption; the inverse of ``caption``.

    Case and repeated whitespace are ignored, anything else must follow the grammar exactly.

    Args:
        text: a caption such as "a small blue square on the right".

    Returns:
        dict with keys color, shape, size, position, e.g. {"color": "blue", "shape": "square", "size": "small",
        "position": "right"}.
    """
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}: {text!r}")
    match = _CAPTION_RE.fullmatch(" ".join(text.lower().split()))
    if match is None:
        raise ValueError(f"caption {text!r} does not follow the grammar 'a {{size}} {{color}} {{shape}} {{where}}', "
                         f"e.g. 'a large red circle at the top left'; sizes {tuple(SIZES)}, colours {tuple(COLORS)}, "
                         f"shapes {SHAPES}, places {tuple(_WHERE.values())}")
    size, color, shape, where = match.groups()
    return {"color": color, "shape": shape, "size": size, "position": _PHRASE_TO_POSITION[where]}


def _coverage(shape_ids: Tensor, cx: Tensor, cy: Tensor, half: Tensor, size: int) -> Tensor:
    """Fraction of each pixel covered by the object, by supersampling (anti-aliased edges).

    Each pixel is split into k x k cells with one sample per cell. The samples are sheared (a rotated-grid pattern):
    in a pixel, the k*k samples have k*k distinct x and k*k distinct y coordinates, so an edge parallel to an axis
    gets k*k + 1 coverage levels instead of k + 1, and a square's edges are smooth wherever they fall.

    Args:
        shape_ids: int64 (B,) index into SHAPES.
        cx, cy: float32 (B,) object centre in pixels (x to the right, y down).
        half: float32 (B,) half of the bounding-box side, in pixels.
        size: image side in pixels.

    Returns:
        float32 (B, 1, size, size) coverage in [0, 1].
    """
    k = _SUPERSAMPLE
    cell = torch.arange(k * size, dtype=torch.float32)  # (kW,) index of the sample's cell
    shift = (cell % k + 0.5) / k  # (kW,) where the sample sits inside its cell, set by the cell in the other axis
    xs = (cell[None, :] + shift[:, None]) / k  # (kH, kW) sample x, in pixels
    ys = (cell[:, None] + shift[None, :]) / k  # (kH, kW) sample y
    inside = torch.empty(len(shape_ids), k * size, k * size, dtype=torch.bool)  # (B, kH, kW)
    for s, name in enumerate(SHAPES):
        sel = shape_ids == s
        if not sel.any():
            continue
        h = half[sel, None, None]  # (b, 1, 1)
        x = (xs - cx[sel, None, None]).abs()  # (b, kH, kW) offset from the centre, mirrored: shapes are symmetric
        y = ys - cy[sel, None, None]  # (b, kH, kW)
        if name == "circle":
            inside[sel] = x * x + y * y <= h * h
        elif name == "square":
            inside[sel] = (x <= h) & (y.abs() <= h)
        elif name == "triangle":  # apex at the top (y = -h), base at the bottom (y = h)
            inside[sel] = (y <= h) & (2 * x <= y + h)
        else:  # diamond: a square turned 45 degrees, its diagonals span the bounding box
            inside[sel] = x + y.abs() <= h
    return F.avg_pool2d(inside[:, None].float(), k)  # (B, 1, H, W)


def render(attributes_list: list[dict[str, str]], size: int = 32,
           generator: torch.Generator | None = None) -> Tensor:
    """Render one image per attributes dict: one shape on a light-grey gradient, anti-aliased by supersampling.

    With a generator, each image gets colour jitter (+-10 per channel), size jitter (+-10%), a centre offset of up
    to size/16 from its grid cell's centre and a random background. The draws depend only on the number of
    images, never on ``size``, so the same generator state gives the same scene at every resolution. Without a
    generator the canonical image is drawn: nominal colour and size, centred in its cell, flat grey background.

    Args:
        attributes_list: list of B dicts with keys color, shape, size, position (see ``caption``).
        size: image side in pixels, at least MIN_SIZE.
        generator: optional CPU ``torch.Generator`` for the jitter.

    Returns:
        float32 (B, 3, size, size) in [-1, 1], quantised to 256 levels like an 8-bit image.
    """
    return _to_float(_render_uint8(attributes_list, size, generator))


def _render_uint8(attributes_list: list[dict[str, str]], size: int, generator: torch.Generator | None) -> Tensor:
    """``render`` before the conversion to [-1, 1]: uint8 (B, 3, size, size) in 0-255."""
    size = _check_size(size)
    if isinstance(attributes_list, dict):
        raise TypeError("render takes a list of attribute dicts, got a single dict; wrap it in a list: render([a])")
    for attributes in attributes_list:
        _check_attributes(attributes)
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise TypeError(f"generator must be a CPU torch.Generator or None, got {generator!r}; "
                        f"use torch.Generator().manual_seed(seed)")
    B = len(attributes_list)
    color_id, shape_id, size_id, pos_id = (
        torch.tensor([list(names).index(a[key]) for a in attributes_list], dtype=torch.int64)  # (B,)
        for key, names in zip(_KEYS, (COLORS, SHAPES, SIZES, POSITIONS))
    )
    rgb = torch.tensor(list(COLORS.values()), dtype=torch.float32)[color_id]  # (B, 3)
    side = torch.tensor(list(SIZES.values()), dtype=torch.float32)[size_id] * size  # (B,) bounding-box side
    cx = (pos_id % 3 + 0.5) * (size / 3)  # (B,) centre of the grid cell, in pixels
    cy = (pos_id // 3 + 0.5) * (size / 3)
    bg_level = torch.full((B,), _BG_CANONICAL)
    slope = torch.zeros(B, 2)
    if generator is not None:
        # The order and shapes of these draws are part of the dataset's definition: changing them changes Shapes.
        rgb = rgb + torch.randint(-_JITTER, _JITTER + 1, (B, 3), generator=generator)
        side = side * (1 + _SIZE_JITTER * (2 * torch.rand(B, generator=generator) - 1))
        offset = (2 * torch.rand(B, 2, generator=generator) - 1) * (size / 16)  # (B, 2)
        cx, cy = cx + offset[:, 0], cy + offset[:, 1]
        lo, hi = _BG_RANGE
        bg_level = lo + (hi - lo) * torch.rand(B, generator=generator)
        slope = _BG_SLOPE * (2 * torch.rand(B, 2, generator=generator) - 1)  # (B, 2) grey levels, centre to edge
    half = side / 2
    # Keep the bounding box inside the canvas with a pure background border pixel. The extra half pixel keeps a
    # clamped edge off the pixel grid, where it would get no anti-aliasing.
    cx = torch.maximum(torch.minimum(cx, size - half - 1.5), half + 1.5)
    cy = torch.maximum(torch.minimum(cy, size - half - 1.5), half + 1.5)

    pixel = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # (W,) pixel centres in [-1, 1]
    background = (bg_level[:, None, None] + slope[:, 0, None, None] * pixel[None, None, :]
                  + slope[:, 1, None, None] * pixel[None, :, None])[:, None]  # (B, 1, H, W), grey: R = G = B
    images = torch.empty(B, 3, size, size, dtype=torch.uint8)
    step = max(1, _RASTER_BUDGET // (_SUPERSAMPLE * size) ** 2)
    for start in range(0, B, step):
        part = slice(start, start + step)
        alpha = _coverage(shape_id[part], cx[part], cy[part], half[part], size)  # (b, 1, H, W)
        bg = background[part]
        blended = bg + alpha * (rgb[part, :, None, None] - bg)  # (b, 3, H, W): alpha compositing, in 0-255
        images[part] = blended.round().clamp(0, 255).to(torch.uint8)
    return images


def _to_float(images: Tensor) -> Tensor:
    """uint8 (..., 3, H, W) in 0-255 -> float32 (..., 3, H, W) in [-1, 1]."""
    return images.float() / 127.5 - 1


def _chunk_generator(seed: int, split: str, chunk: int, stream: str) -> torch.Generator:
    """A CPU generator for one chunk of one split, seeded by a hash so that different streams never overlap."""
    key = f"tinyldm.shapes/{seed}/{split}/{chunk}/{stream}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


class Shapes(Dataset):
    """The captioned Shapes dataset: item i is a dict with "image", "caption" and "attributes".

    Items are drawn and rendered lazily in chunks of 256 from generators seeded by (seed, split, chunk), so item i
    is the same for every n; rendered chunks are cached as uint8 (3 * size**2 bytes per image).

    Args:
        n: number of items.
        size: image side in pixels, at least MIN_SIZE.
        seed: the dataset's seed; the same (size, seed, split, i) gives the same item on every machine.
        split: "train" (colour-shape pairs not in HELD_OUT), "test" (the train distribution, a separate stream) or
            "heldout" (only the HELD_OUT pairs).

    Item:
        image: float32 (3, size, size) in [-1, 1].
        caption: str, e.g. "a small purple diamond on the left".
        attributes: dict with str values for color, shape, size, position.
    """

    def __init__(self, n: int, size: int = 32, seed: int = 0, split: str = "train") -> None:
        self.n = _check_int("n", n, 1, "pass the number of images, e.g. Shapes(4096)")
        self.size = _check_size(size)
        self.seed = _check_int("seed", seed, None, "pass an integer seed, e.g. seed=0")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        self.split = split
        if split == "heldout":
            self._pairs = sorted(HELD_OUT)
        else:
            self._pairs = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT]
        n_chunks = -(-self.n // _CHUNK)
        ids = []
        for chunk in range(n_chunks):
            g = _chunk_generator(self.seed, split, chunk, "attributes")
            ids.append(torch.stack([torch.randint(0, k, (_CHUNK,), generator=g)
                                    for k in (len(self._pairs), len(SIZES), len(POSITIONS))], dim=1))
        self._ids = torch.cat(ids).tolist()  # n_chunks * 256 rows of (pair, size, position) indices
        self._chunks = [None] * n_chunks  # each becomes uint8 (256, 3, size, size) when first read

    def _attributes(self, i: int) -> dict[str, str]:
        pair, size, position = self._ids[i]
        color, shape = self._pairs[pair]
        return {"color": color, "shape": shape, "size": list(SIZES)[size], "position": POSITIONS[position]}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        i = check_index(index, self.n, "Shapes")
        chunk, j = divmod(i % self.n, _CHUNK)
        if self._chunks[chunk] is None:
            # The whole chunk is rendered, even past n, so that the draws (and item i) do not depend on n.
            attributes = [self._attributes(k) for k in range(chunk * _CHUNK, (chunk + 1) * _CHUNK)]
            self._chunks[chunk] = _render_uint8(attributes, self.size, _chunk_generator(
                self.seed, self.split, chunk, "render"))
        attributes = self._attributes(i % self.n)
        return {
            "image": _to_float(self._chunks[chunk][j]),  # (3, size, size)
            "caption": caption(attributes),
            "attributes": attributes,
        }

    def __repr__(self) -> str:
        return f"Shapes(n={self.n}, size={self.size}, seed={self.seed}, split={self.split!r})"


def shapes_tensor(num_images: int, size: int = 32, seed: int = 0, split: str = "train") -> Tensor:
    """The first ``num_images`` Shapes images as one tensor (num_images, 3, size, size) in [-1, 1]."""
    dataset = Shapes(num_images, size=size, seed=seed, split=split)
    return torch.stack([dataset[i]["image"] for i in range(num_images)])
