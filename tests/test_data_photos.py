"""Tests for tinyldm.data.photos: the photographs load offline from scikit-image's wheel, crops are deterministic and
cut where they say, the splits share no photograph, and bad arguments are refused with the fix."""

import socket
import subprocess
import sys

import pytest
import torch

from tinyldm.data import photos
from tinyldm.data.photos import (
    PHOTOGRAPHS,
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    PhotoCrops,
    load_photograph,
    photographs_sha256,
    photos_tensor,
)

GREY = ("brick", "camera", "coins", "grass", "gravel", "moon")


def test_every_photograph_loads_from_the_wheel_without_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a photograph was fetched over the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    photos._photograph.cache_clear()  # read every file again, with the network closed
    for name in PHOTOGRAPHS:
        image = load_photograph(name)
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3, name
        assert min(image.shape[1:]) >= 300, name  # room for a 64x64 crop at half scale
        assert image.float().std() > 10, name  # a picture, not a flat field
        if name in GREY:
            assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]), name


def test_the_splits_share_no_photograph_and_cover_them_all():
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    assert set(TRAIN_PHOTOS) | set(TEST_PHOTOS) == set(PHOTOGRAPHS)
    assert {"chelsea", "gravel", "rocket"} <= set(TEST_PHOTOS)  # fur, a texture and a sky to judge blur on
    for split, names in (("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS)):
        seen = {item["attributes"]["photo"] for item in PhotoCrops(96, size=16, split=split)}
        assert seen == set(names), split
    assert photographs_sha256("train") != photographs_sha256("test")


def test_same_arguments_give_the_same_tensors_and_item_i_does_not_depend_on_n():
    a = photos_tensor(300, size=32, seed=3)
    assert a.shape == (300, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, photos_tensor(300, size=32, seed=3))
    assert torch.equal(a[:5], photos_tensor(5, size=32, seed=3))
    assert not torch.equal(a[:5], photos_tensor(5, size=32, seed=4))
    assert not torch.equal(photos_tensor(5, size=32, split="test"), photos_tensor(5, size=32, split="train"))
    levels = (a + 1) * 127.5  # 8-bit pictures in [-1, 1]
    assert a.min() >= -1 and a.max() <= 1 and (levels - levels.round()).abs().max() < 1e-4


def test_a_crop_at_full_scale_is_the_photographs_pixels():
    crops = PhotoCrops(40, size=24, seed=1, split="test", scale=(1.0, 1.0))
    flipped = 0
    for i in range(len(crops)):
        item = crops[i]
        a = item["attributes"]
        assert a["side"] == 24 and item["caption"] == f"a photograph of {PHOTOGRAPHS[a['photo']]} ({a['photo']})"
        region = load_photograph(a["photo"])[:, a["top"]:a["top"] + 24, a["left"]:a["left"] + 24]
        if a["flipped"]:
            region, flipped = region.flip(-1), flipped + 1
        assert torch.equal(item["image"], region.float() / 127.5 - 1)
    assert 0 < flipped < len(crops)
    assert not any(PhotoCrops(40, size=24, seed=1, split="test", flip=False)[i]["attributes"]["flipped"]
                   for i in range(40))


def test_permuted_colours_reorder_the_channels_of_the_same_crops():
    plain = PhotoCrops(300, size=16, seed=2)  # more than one chunk of draws
    permuted = PhotoCrops(300, size=16, seed=2, permute_colours=True)
    orders = set()
    for i in range(len(plain)):
        a, b = plain[i], permuted[i]
        channels = b["attributes"]["channels"]
        assert a["attributes"]["channels"] == (0, 1, 2) and sorted(channels) == [0, 1, 2]
        assert {k: v for k, v in a["attributes"].items() if k != "channels"} == \
               {k: v for k, v in b["attributes"].items() if k != "channels"}  # the same square of the same photo
        assert torch.equal(b["image"], a["image"][list(channels)])
        orders.add(channels)
    assert len(orders) == 6  # every order of R, G, B occurs, the identity included
    assert torch.equal(photos_tensor(8, size=16, seed=2, permute_colours=True),
                       torch.stack([permuted[i]["image"] for i in range(8)]))


def test_a_rescaled_crop_shows_a_larger_square_of_the_photograph():
    crops = PhotoCrops(64, size=32, scale=(0.5, 1.0))
    sides = [crops[i]["attributes"]["side"] for i in range(len(crops))]
    assert min(sides) >= 32 and max(sides) <= 64 and len(set(sides)) > 10
    item = next(crops[i] for i in range(len(crops)) if crops[i]["attributes"]["photo"] in GREY)
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][1], item["image"][2])


def test_sizes_from_tiny_to_full():
    for size in (8, 32, 64, 150):
        assert photos_tensor(2, size=size, split="test").shape == (2, 3, size, size)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 200}, "a 200x200 crop does not fit the photograph coins (303x384) rescaled by 0.5: its shorter side "
                    "is then 151 pixels; use a crop size of at most 151 for the train split, or a rescale range "
                    "that starts higher, e.g. scale=(0.67, 1.0)"),
    ({"size": 400, "split": "test"}, "use a crop size of at most 150 for the test split"),
    ({"split": "val"}, "unknown split 'val' for the photo crops; use one of ('train', 'test')"),
    ({"scale": (0.5, 2.0)}, "scale must satisfy 0 < low <= high <= 1"),
    ({"size": 0}, "size must be >= 1, got 0"),
])
def test_bad_arguments_are_named_with_the_fix(kwargs, message):
    with pytest.raises(ValueError) as error:
        PhotoCrops(4, **kwargs)
    assert message in str(error.value)
    if kwargs.get("size") == 400:
        assert "rescale range" not in str(error.value)  # no range makes 400 pixels fit a 300-pixel photograph


def test_a_missing_scikit_image_names_the_install_command(monkeypatch):
    photos._photograph.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    try:
        with pytest.raises(ModuleNotFoundError, match=r"need scikit-image.*`pip install scikit-image`"):
            PhotoCrops(4)
    finally:
        photos._photograph.cache_clear()


def test_importing_tinyldm_does_not_import_scikit_image():
    code = "import sys, tinyldm, tinyldm.data.photos, tinyldm.data.training_set; print('skimage' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
