"""The pictures a training command learns from: the Shapes train split by default, crops of the train photographs
("photos"), or your own captioned pictures.

Every training job (the pixel model, the autoencoder, the latent model) loads its data here, so that ``--data``,
``--num-images``, ``--image-size`` and ``--strict`` mean the same thing on every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tinyldm.data.folder import image_text_pairs
from tinyldm.data.photos import DEFAULT_SCALE, TRAIN_PHOTOS, PhotoCrops, photographs_sha256
from tinyldm.data.shapes import Shapes

__all__ = ["TrainingSet", "training_set", "PHOTOS"]

PHOTOS = "photos"  # the name that ``data`` gives for crops of the train photographs (``tinyldm.data.photos``)


@dataclass
class TrainingSet:
    """What ``training_set`` returns."""

    images: Tensor  # (n, 3, S, S) in [-1, 1], on the CPU
    captions: list[str]  # one caption per image
    record: dict[str, Any]  # where the pictures came from, for run.json
    key: dict[str, Any]  # what identifies them, for caches: the settings of Shapes or the crops, or the images' sha256


def training_set(data: str | Path | None, size: int, num_images: int | None, default_num: int,
                 strict: bool = False, progress: bool = True, permute_colours: bool = True) -> TrainingSet:
    """Load a training job's pictures and their captions.

    Args:
        data: None for the Shapes train split (seed 0); "photos" for crops of the train photographs (seed 0,
            ``tinyldm.data.photos.PhotoCrops``); else a folder of captioned pictures, "mnist" or "fashion-mnist"
            (``tinyldm.data.folder.image_text_pairs``). A folder called photos is read as one when given as
            ./photos or a Path.
        size: S, the image side.
        num_images: how many (the first ones); None: ``default_num`` Shapes or crops, or every picture of ``data``.
        default_num: the preset's number of Shapes images.
        strict, progress: see ``tinyldm.data.folder.read_image_folder``.
        permute_colours: the photo crops' colour channels in a random order (``PhotoCrops``), as the photo
            autoencoders trained; False keeps the true colours (the super-resolution model, tested on true colours).
    """
    if data is None:
        n = num_images or default_num
        dataset = Shapes(n, size=size)
        items = [dataset[i] for i in range(n)]
        images = torch.stack([item["image"] for item in items])  # (n, 3, S, S)
        key = {"dataset": "shapes", "num_images": n, "size": size, "seed": 0, "split": "train"}
        return TrainingSet(images, [item["caption"] for item in items], {"source": "shapes"}, key)
    if isinstance(data, str) and data == PHOTOS:
        return _photo_crops(size, num_images or default_num, permute_colours)
    pairs = image_text_pairs(data, size, num_images, strict, None if progress else False)
    record = pairs.record()
    key = {"dataset": "images", "images_sha256": record["images_sha256"], "num_images": len(pairs), "size": size}
    return TrainingSet(pairs.images, pairs.captions, record, key)


def _photo_crops(size: int, n: int, permute_colours: bool) -> TrainingSet:
    if Path(PHOTOS).is_dir():
        raise ValueError(f"--data {PHOTOS} names the crops of the photographs that ship with scikit-image, but there "
                         f"is also a folder {PHOTOS}/ here; give --data ./{PHOTOS} to train on that folder, or run "
                         f"from another directory to train on the photo crops")
    crops = PhotoCrops(n, size=size, split="train", permute_colours=permute_colours)
    items = [crops[i] for i in range(n)]
    images = torch.stack([item["image"] for item in items])  # (n, 3, S, S)
    settings = {"num_images": n, "size": size, "seed": 0, "split": "train", "scale": list(DEFAULT_SCALE),
                "flip": True, "permute_colours": permute_colours, "photographs": list(TRAIN_PHOTOS),
                "photographs_sha256": photographs_sha256("train")}
    return TrainingSet(images, [item["caption"] for item in items], {"source": PHOTOS, **settings},
                       {"dataset": PHOTOS, **settings})
