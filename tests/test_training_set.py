"""Tests for tinyldm.data.training_set: "photos" loads crops of the train photographs with a record that names them."""

import pytest
import torch

from tinyldm.data.photos import TRAIN_PHOTOS, photos_tensor
from tinyldm.data.training_set import PHOTOS, training_set


def test_photos_are_train_split_crops_with_a_record_naming_the_photographs():
    pictures = training_set(PHOTOS, 32, 20, default_num=2048)
    # the train crops in shuffled colour orders (see tinyldm.data.photos), as the record says
    assert torch.equal(pictures.images, photos_tensor(20, 32, seed=0, split="train", permute_colours=True))
    assert pictures.record["permute_colours"] is True
    assert len(pictures.captions) == 20 and all(c.startswith("a photograph of ") for c in pictures.captions)
    assert pictures.record["source"] == PHOTOS and pictures.record["photographs"] == list(TRAIN_PHOTOS)
    assert pictures.key["dataset"] == PHOTOS and len(pictures.key["photographs_sha256"]) == 64
    assert training_set(PHOTOS, 16, None, default_num=12).images.shape == (12, 3, 16, 16)


def test_photos_in_true_colours_are_the_same_crops_unpermuted_and_keyed_apart():
    true = training_set(PHOTOS, 32, 8, default_num=8, permute_colours=False)
    assert torch.equal(true.images, photos_tensor(8, 32, seed=0, split="train", permute_colours=False))
    assert true.record["permute_colours"] is False
    assert true.key != training_set(PHOTOS, 32, 8, default_num=8).key  # separate latent caches


def test_photos_at_a_size_no_photograph_fits_name_the_largest_that_does():
    with pytest.raises(ValueError, match="use a crop size of at most 151 for the train split"):
        training_set(PHOTOS, 256, 4, default_num=4)


def test_a_folder_called_photos_is_not_silently_shadowed(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"give --data \./photos to train on that folder"):
        training_set(PHOTOS, 32, 4, default_num=4)
