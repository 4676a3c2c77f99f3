"""Tests for tinyldm.data: captioned Shapes, toy 2-D data and the (Fashion-)MNIST loaders. Offline, a few seconds."""

import hashlib
import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tinyldm.data.shapes import COLORS, HELD_OUT, POSITIONS, SHAPES, SIZES, Shapes, caption, parse_caption, render
from tinyldm.data.toy import toy_2d
from tinyldm.data.vision import default_root, fashion_mnist, mnist

# The first Shapes(4, size=32, seed=0) items; see test_shapes_golden_bytes.
GOLDEN_CAPTIONS = ["a small purple circle at the bottom right", "a large purple square in the center"]
GOLDEN_DIGEST = "46a465a013b346edbc08c118b39122342516b04c2219cfd07522e049659f9e88"
ALL_ATTRIBUTES = [
    {"color": c, "shape": s, "size": z, "position": p}
    for c, s, z, p in itertools.product(COLORS, SHAPES, SIZES, POSITIONS)
]


@pytest.fixture(scope="module")
def train():
    """4096 training items at size 32, rendered once for the module: images (N, 3, 32, 32) in 0-255, attributes."""
    ds = Shapes(4096, size=32, seed=0)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([to_255(it["image"]) for it in items]), [it["attributes"] for it in items]


def to_255(image):
    """float (..., 3, H, W) in [-1, 1] -> float (..., 3, H, W) in 0-255, integral (the images are 8-bit)."""
    return ((image + 1) * 127.5).round()


def saturation(images):
    """(B, 3, H, W) in 0-255 -> (B, H, W): max minus min channel; 0 on the grey background."""
    return images.amax(-3) - images.amin(-3)


def coverage(images):
    """(B, 3, H, W) -> (B, H, W): how much of each pixel the object covers, from saturation (0 on background)."""
    sat = saturation(images)
    return sat / sat.flatten(1).amax(1)[:, None, None]


def extent(mask):
    """(H, W) bool -> (top, bottom, left, right) inclusive pixel indices of its bounding box."""
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()


# ---------------------------------------------------------------- Shapes: format and determinism


def test_shapes_item_format():
    item = Shapes(3, size=32)[2]
    assert set(item) == {"image", "caption", "attributes"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert set(item["attributes"]) == {"color", "shape", "size", "position"}
    assert all(isinstance(v, str) for v in item["attributes"].values())
    assert item["caption"] == caption(item["attributes"])
    assert (to_255(item["image"]) - (item["image"] + 1) * 127.5).abs().max() < 1e-3, "images are not 8-bit"


def test_shapes_bit_for_bit_across_constructions():
    a, b = Shapes(300, seed=3), Shapes(300, seed=3)
    for i in (0, 1, 255, 256, 299):  # both sides of a chunk boundary (chunks of 256)
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["caption"] == b[i]["caption"]


def test_shapes_item_does_not_depend_on_n():
    small, large = Shapes(5), Shapes(600)
    assert torch.equal(small[3]["image"], large[3]["image"]) and small[3]["caption"] == large[3]["caption"]
    assert torch.equal(Shapes(270)[266]["image"], large[266]["image"])  # in the last, partly used chunk of 256


def test_shapes_seed_and_split_change_the_stream():
    base = [Shapes(8, seed=0)[i]["image"] for i in range(8)]
    for other in (Shapes(8, seed=1), Shapes(8, seed=0, split="test")):
        assert not any(torch.equal(x, other[i]["image"]) for i, x in enumerate(base))


def test_shapes_golden_bytes():
    """Pins the dataset itself: if this fails, Shapes changed for everyone (update the digest only on purpose)."""
    ds = Shapes(4, size=32, seed=0)
    digest = hashlib.sha256()
    for i in range(4):
        digest.update(to_255(ds[i]["image"]).to(torch.uint8).numpy().tobytes())
        digest.update(ds[i]["caption"].encode())
    assert [ds[i]["caption"] for i in range(2)] == GOLDEN_CAPTIONS
    assert digest.hexdigest() == GOLDEN_DIGEST


def test_same_scene_at_every_size():
    small, large = Shapes(16, size=32, seed=5), Shapes(16, size=64, seed=5)
    for i in range(16):
        assert small[i]["attributes"] == large[i]["attributes"]
        pooled = F.avg_pool2d(large[i]["image"][None], 2)[0]  # (3, 32, 32)
        # Only the 1.5-pixel border clamp differs between resolutions; another scene differs far more.
        assert (pooled - small[i]["image"]).abs().mean() < 0.06
        assert (pooled - small[(i + 1) % 16]["image"]).abs().mean() > 0.06


# ---------------------------------------------------------------- captions


def test_caption_round_trip_for_every_combination():
    captions = [caption(a) for a in ALL_ATTRIBUTES]
    assert len(set(captions)) == len(ALL_ATTRIBUTES) == 6 * 4 * 2 * 9
    assert all(parse_caption(c) == a for c, a in zip(captions, ALL_ATTRIBUTES))


def test_caption_grammar_examples():
    a = {"color": "red", "shape": "circle", "size": "large", "position": "top left"}
    assert caption(a) == "a large red circle at the top left"
    assert caption({**a, "position": "left"}) == "a large red circle on the left"
    assert caption({**a, "position": "center", "size": "small"}) == "a small red circle in the center"
    assert parse_caption("  A Large RED circle   at the top LEFT ") == a


def test_caption_errors():
    a = {"color": "red", "shape": "circle", "size": "large", "position": "top"}
    with pytest.raises(ValueError, match="unknown color 'pink'"):
        caption({**a, "color": "pink"})
    with pytest.raises(ValueError, match="exactly the keys"):
        caption({"color": "red", "shape": "circle"})
    with pytest.raises(ValueError, match="'a big red circle at the top' does not follow the grammar"):
        parse_caption("a big red circle at the top")
    with pytest.raises(ValueError, match="does not follow"):
        parse_caption("a large red circle at the top and more")
    with pytest.raises(TypeError, match="must be a str"):
        parse_caption(None)


# ---------------------------------------------------------------- splits


def test_train_split_never_shows_held_out_pairs(train):
    _, attributes = train
    pairs = {(a["color"], a["shape"]) for a in attributes}
    assert not pairs & HELD_OUT
    assert len(pairs) == 6 * 4 - len(HELD_OUT)  # every other pair does occur
    assert {a["position"] for a in attributes} == set(POSITIONS) and {a["size"] for a in attributes} == set(SIZES)


def test_test_split_has_the_train_distribution():
    ds = Shapes(1000, split="test")
    pairs = {(ds[i]["attributes"]["color"], ds[i]["attributes"]["shape"]) for i in range(len(ds))}
    assert not pairs & HELD_OUT and len(pairs) == 20


def test_heldout_split_only_shows_held_out_pairs():
    ds = Shapes(500, split="heldout")
    pairs = [(ds[i]["attributes"]["color"], ds[i]["attributes"]["shape"]) for i in range(len(ds))]
    assert set(pairs) == HELD_OUT


# ---------------------------------------------------------------- what the images look like


def test_colours_within_jitter(train):
    images, attributes = train
    seen = {}
    for image, a in zip(images, attributes):
        top, bottom, left, right = extent(saturation(image[None])[0] > 0)
        centre = image[:, (top + bottom) // 2, (left + right) // 2]  # fully covered, even for a triangle
        if a["size"] == "large":
            nominal = torch.tensor(COLORS[a["color"]], dtype=torch.float32)
            assert (centre - nominal).abs().max() <= 10, (a, centre)
            seen.setdefault(a["color"], []).append(centre)
    spread = [torch.stack(v).std(0).min() for v in seen.values()]
    assert len(seen) == 6 and min(spread) > 2, "the colours are not jittered"


def test_edges_are_anti_aliased(train):
    images, _ = train
    cov = coverage(images)  # (B, H, W)
    partial = ((cov > 0.05) & (cov < 0.95)).flatten(1).sum(1)  # pixels strictly between background and object
    assert (partial >= 4).all()


def test_object_inside_canvas_and_in_its_grid_cell(train):
    images, attributes = train
    cov = coverage(images)
    size = images.shape[-1]
    assert (cov[:, 0, :] == 0).all() and (cov[:, -1, :] == 0).all()
    assert (cov[:, :, 0] == 0).all() and (cov[:, :, -1] == 0).all()
    for c, a in zip(cov, attributes):
        top, bottom, left, right = extent(c > 0)
        row, col = divmod(POSITIONS.index(a["position"]), 3)
        cy, cx = (top + bottom + 1) / 2, (left + right + 1) / 2
        assert row * size / 3 - 0.5 <= cy <= (row + 1) * size / 3 + 0.5, (a, cy)
        assert col * size / 3 - 0.5 <= cx <= (col + 1) * size / 3 + 0.5, (a, cx)


def test_object_size_and_geometry(train):
    """The covered area gives the bounding-box side: area = fill * side**2, fill being the shape's share of its box."""
    images, attributes = train
    cov = coverage(images)
    size = images.shape[-1]
    fill = {"circle": torch.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}
    ratios = {}
    for c, a in zip(cov, attributes):
        side = SIZES[a["size"]] * size
        ratio = (c.sum() / fill[a["shape"]]).sqrt().item() / side
        assert 0.85 <= ratio <= 1.15, (a, ratio)
        ratios.setdefault((a["shape"], a["size"]), []).append(ratio)
        if a["shape"] == "triangle":  # pointing up: the centroid is side/6 below the box centre
            rows = c.sum(1)  # (H,)
            top, bottom, _, _ = extent(c > 0)
            centroid = (rows * (torch.arange(size) + 0.5)).sum() / rows.sum()
            assert centroid - (top + bottom + 1) / 2 > 0.05 * side, (a, centroid)
    for key, values in ratios.items():  # jitter is +-10% around the stated fraction
        values = torch.tensor(values)
        assert abs(values.mean() - 1) < 0.03 and values.min() < 0.95 and values.max() > 1.05, key


def test_background_is_light_unsaturated_grey_with_a_gentle_gradient(train):
    images, _ = train
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)  # (B,3,4W)
    assert (saturation(border[..., None]) == 0).all(), "the background is not grey"
    assert border.min() >= 160 and border.max() <= 250
    variation = border.amax((1, 2)) - border.amin((1, 2))  # (B,)
    assert variation.max() <= 50 and (variation > 0).float().mean() > 0.9


def test_render_canonical_and_jittered():
    a = {"color": "blue", "shape": "square", "size": "large", "position": "center"}
    canonical = render([a, a])
    assert canonical.shape == (2, 3, 32, 32) and torch.equal(canonical[0], canonical[1])
    assert to_255(canonical[0, :, 16, 16]).tolist() == list(COLORS["blue"])
    g = torch.Generator().manual_seed(0)
    jittered = render([a, a], size=48, generator=g)
    assert jittered.shape == (2, 3, 48, 48) and not torch.equal(jittered[0], jittered[1])
    assert render([], size=16).shape == (0, 3, 16, 16)


# ---------------------------------------------------------------- Shapes: errors


@pytest.mark.parametrize("n, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)])
def test_shapes_bad_n(n, error):
    with pytest.raises(error, match=f"n must be.*got {n!r}"):
        Shapes(n)


@pytest.mark.parametrize("size, error", [(15, ValueError), (8, ValueError), (32.0, TypeError), ("32", TypeError)])
def test_shapes_bad_size(size, error):
    with pytest.raises(error, match=r"size must be.*size >= 16"):
        Shapes(4, size=size)


def test_shapes_unknown_split():
    with pytest.raises(ValueError, match=r"unknown split 'val'.*'train', 'test', 'heldout'"):
        Shapes(4, split="val")


def test_shapes_index_out_of_range():
    ds = Shapes(4)
    assert torch.equal(ds[-1]["image"], ds[3]["image"])
    for i in (4, -5):
        with pytest.raises(IndexError, match=f"index {i} is out of range"):
            ds[i]
    with pytest.raises(TypeError, match="index must be an int"):
        ds[1.0]


def test_render_errors():
    a = {"color": "blue", "shape": "square", "size": "large", "position": "center"}
    with pytest.raises(TypeError, match="wrap it in a list"):
        render(a)
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        render([{**a, "shape": "hexagon"}])
    with pytest.raises(ValueError, match="size >= 16"):
        render([a], size=12)
    with pytest.raises(TypeError, match="CPU torch.Generator"):
        render([a], generator=0)


# ---------------------------------------------------------------- toy 2-D data


@pytest.mark.parametrize("kind", ["moons", "swiss_roll", "gaussians"])
def test_toy_2d_shape_determinism_and_standardisation(kind):
    x = toy_2d(20000, kind, seed=1)
    assert x.shape == (20000, 2) and x.dtype == torch.float32
    assert torch.equal(x, toy_2d(20000, kind, seed=1)) and not torch.equal(x, toy_2d(20000, kind, seed=2))
    assert x.mean(0).abs().max() < 0.05 and (x.std(0) - 1).abs().max() < 0.05
    assert toy_2d(1, kind).shape == (1, 2)


def test_toy_2d_gaussians_are_eight_modes_on_a_ring():
    x = toy_2d(4000, "gaussians")
    radius = x.norm(dim=1)  # (n,)
    assert (radius - radius.mean()).abs().median() < 0.15 and radius.min() > 0.7
    angle = torch.atan2(x[:, 1], x[:, 0]) / (torch.pi / 4)  # (n,) in units of 45 degrees
    assert (angle - angle.round()).abs().median() < 0.15  # near one of the 8 directions (uniform angles: 0.25)
    assert torch.bincount(angle.round().long() % 8, minlength=8).min() > 350


def test_toy_2d_moons_and_swiss_roll_follow_their_curves():
    """Undo the standardisation with independently derived statistics, then measure the distance to the curves."""
    # Moons: upper arc (cos t, sin t), lower arc (1 - cos t, 1/2 - sin t), t ~ U[0, pi]; mean (1/2, 1/4),
    # variance (3/4, 9/16 - 1/pi) without the noise.
    p = toy_2d(4000, "moons") * torch.tensor([0.75, 9 / 16 - 1 / torch.pi]).sqrt() + torch.tensor([0.5, 0.25])
    to_upper = (p.norm(dim=1) - 1).abs()
    to_lower = ((p - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs()
    assert torch.minimum(to_upper, to_lower).quantile(0.95) < 0.2
    assert 0.45 < (to_upper < to_lower).float().mean() < 0.55
    # Swiss roll: t (cos t, sin t), t ~ U[3pi/2, 9pi/2]; mean (2, 2/(3pi)), variance about (43.9, 48.3).
    p = toy_2d(4000, "swiss_roll") * torch.tensor([43.9, 48.3]).sqrt() + torch.tensor([2, 2 / (3 * torch.pi)])
    radius, angle = p.norm(dim=1), torch.atan2(p[:, 1], p[:, 0]) % (2 * torch.pi)  # (n,) each
    turns = torch.round((radius - angle) / (2 * torch.pi))  # which turn of the spiral each point is on
    assert (radius - angle - 2 * torch.pi * turns).abs().quantile(0.95) < 1.5


def test_toy_2d_errors():
    with pytest.raises(ValueError, match=r"unknown kind 'spiral'.*'moons'"):
        toy_2d(10, "spiral")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        toy_2d(0)
    with pytest.raises(TypeError, match="n must be an int, got 10.0"):
        toy_2d(10.0)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.fixture
def tiny_root(tmp_path, monkeypatch, write_idx):
    """A dataset root holding tiny extracted MNIST and FashionMNIST idx files; no mirror, no network needed."""
    monkeypatch.delenv("TINYLDM_DATASET_MIRROR", raising=False)
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    images[1] = 255
    images[2, :14] = 255
    labels = torch.tensor([7, 0, 9], dtype=torch.uint8)
    for name in ("MNIST", "FashionMNIST"):
        for prefix in ("train", "t10k"):
            write_idx(tmp_path / name / "raw", prefix, images, labels)
    return tmp_path


def test_mnist_from_tiny_idx_files(tiny_root):
    ds = mnist(tiny_root, split="test")
    assert len(ds) == 3
    item = ds[0]
    assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
    assert (item["image"] == -1).all() and (ds[1]["image"] == 1).all()
    assert item["caption"] == "a handwritten digit 7" and item["attributes"] == {"label": 7, "class_name": "7"}
    resized = mnist(tiny_root, split="train", size=14)[2]["image"]
    assert resized.shape == (1, 14, 14) and resized[0, 0, 0] == 1 and resized[0, -1, 0] == -1


def test_fashion_mnist_from_tiny_idx_files(tiny_root):
    ds = fashion_mnist(tiny_root, split="train", size=32)
    assert ds[0]["image"].shape == (1, 32, 32) and ds[0]["image"].min() >= -1 and ds[0]["image"].max() <= 1
    assert [ds[i]["caption"] for i in range(3)] == [
        "a photo of a sneaker", "a photo of a t-shirt", "a photo of an ankle boot"]
    assert ds[2]["attributes"] == {"label": 9, "class_name": "ankle boot"}


@pytest.mark.skipif(not os.environ.get("TINYLDM_DATASET_MIRROR"),
                    reason="set TINYLDM_DATASET_MIRROR to a folder with mnist/ and fashion-mnist/ idx .gz files")
def test_real_datasets_from_mirror(tmp_path):
    digits = mnist(tmp_path, split="test")
    assert len(digits) == 10_000 and digits[0]["caption"] == "a handwritten digit 7"  # the first test digit is a 7
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()  # copied from the mirror
    clothes = fashion_mnist(tmp_path, split="test")
    assert len(clothes) == 10_000 and clothes[0]["attributes"] == {"label": 9, "class_name": "ankle boot"}


def test_mirror_without_files(tmp_path, monkeypatch):
    empty = tmp_path / "mirror"
    (empty / "mnist").mkdir(parents=True)
    monkeypatch.setenv("TINYLDM_DATASET_MIRROR", str(empty))
    with pytest.raises(FileNotFoundError, match=f"TINYLDM_DATASET_MIRROR is set, but {empty / 'mnist'} lacks"):
        mnist(tmp_path / "root")


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYLDM_CACHE", str(tmp_path))
    assert default_root() == tmp_path / "datasets"
    monkeypatch.delenv("TINYLDM_CACHE")
    assert default_root() == Path.home() / ".cache" / "tinyldm" / "datasets"


def test_vision_errors(tiny_root):
    with pytest.raises(ValueError, match=r"unknown split 'valid'.*'train', 'test'"):
        mnist(tiny_root, split="valid")
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        fashion_mnist(tiny_root, size=0)
    with pytest.raises(TypeError, match="size must be an int or None, got '32'"):
        mnist(tiny_root, size="32")


def test_changed_captions_change_one_attribute_and_never_make_a_held_out_pair():
    from tinyldm.data.shapes import HELD_OUT, changed_captions, parse_caption

    dataset = Shapes(40, split="test", seed=0)
    attributes = [dataset[i]["attributes"] for i in range(len(dataset))]
    for key in ("color", "shape", "size", "position"):
        captions = changed_captions(attributes, key, seed=3)
        assert captions == changed_captions(attributes, key, seed=3)
        for old, new in zip(attributes, map(parse_caption, captions)):
            assert new[key] != old[key] and all(new[k] == old[k] for k in old if k != key)
            assert (new["color"], new["shape"]) not in HELD_OUT
    with pytest.raises(ValueError, match="key must be one of"):
        changed_captions(attributes, "colour")
