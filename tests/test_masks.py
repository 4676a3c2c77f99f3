"""Inpainting training masks: drawn per item from a seed, in {0, 1}, of every kind."""

import pytest
import torch

from tinyldm.data.masks import inpainting_masks, object_boxes, object_holes
from tinyldm.data.shapes import shapes_tensor


@pytest.fixture(scope="module")
def shapes():
    return shapes_tensor(200)


def test_masks_are_deterministic_per_item_and_seed(shapes):
    masks = inpainting_masks(shapes, seed=3)
    assert torch.equal(masks, inpainting_masks(shapes, seed=3))
    assert torch.equal(masks[50:60], inpainting_masks(shapes[50:60], seed=3, offset=50))  # not the batch's
    assert not torch.equal(masks, inpainting_masks(shapes, seed=4))


def test_masks_are_binary_of_every_kind(shapes):
    masks = inpainting_masks(shapes)
    assert masks.shape == (200, 1, 32, 32) and set(masks.unique().tolist()) == {0.0, 1.0}
    covered = masks.flatten(1).mean(1)
    assert 5 <= int((covered == 1).sum()) <= 40  # some whole-image masks (10% are drawn)
    assert int((covered < 1).sum()) >= 150 and bool((covered > 0).all())


def test_object_masks_cover_the_object(shapes):
    masks = inpainting_masks(shapes, weights=(1, 0, 0, 0))
    for (top, left, bottom, right), mask in zip(object_boxes(shapes).tolist(), masks):
        assert mask[0, top:bottom, left:right].all()
        assert mask.sum() < 32 * 32


def test_object_boxes_find_the_coloured_pixels():
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, 4:10, 20:25] = 0.8  # a red patch on grey
    assert object_boxes(image).tolist() == [[4, 20, 10, 25]]
    assert object_boxes(torch.zeros(1, 3, 32, 32)).tolist() == [[0, 0, 32, 32]]


def test_bad_weights_are_named(shapes):
    with pytest.raises(ValueError, match="one per kind"):
        inpainting_masks(shapes[:2], weights=(1, 0))


def test_object_holes_cover_the_box_widened_and_clipped_to_the_image():
    images = shapes_tensor(6, 32, seed=3)
    holes = object_holes(images, margin=2)
    assert holes.shape == (6, 1, 32, 32) and set(holes.unique().tolist()) <= {0.0, 1.0}
    for hole, (top, left, bottom, right) in zip(holes, object_boxes(images).tolist()):
        rows, cols = hole[0].any(1).nonzero().flatten(), hole[0].any(0).nonzero().flatten()
        assert rows.min() == max(0, top - 2) and rows.max() == min(31, bottom + 1)
        assert cols.min() == max(0, left - 2) and cols.max() == min(31, right + 1)
