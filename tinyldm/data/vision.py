"""MNIST and Fashion-MNIST with captions, in the same item format as Shapes.

torchvision does the downloading, the md5 checks and the idx parsing. For offline machines, set
``TINYLDM_DATASET_MIRROR`` to a folder holding ``mnist/`` and ``fashion-mnist/`` with the original idx ``.gz`` files:
they are copied into the cache and torchvision verifies and extracts them without touching the network.
"""

import numbers
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import MNIST, FashionMNIST

__all__ = ["MNIST_CLASSES", "FASHION_MNIST_CLASSES", "CaptionedImages", "default_root", "mnist", "fashion_mnist"]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot")
SPLITS = ("train", "test")
MIRROR_VAR = "TINYLDM_DATASET_MIRROR"
CACHE_VAR = "TINYLDM_CACHE"


def default_root() -> Path:
    """Where datasets are stored: ``$TINYLDM_CACHE/datasets``, or ``~/.cache/tinyldm/datasets``."""
    return Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "tinyldm") / "datasets"


class CaptionedImages(Dataset):
    """A labelled grey-scale image dataset with one caption per class; items like Shapes' items.

    Args:
        images: uint8 (N, H, W) in 0-255.
        labels: int64 (N,) class indices.
        class_names: one lower-case name per class.
        template: caption with a ``{name}`` field, e.g. "a handwritten digit {name}".
        size: optional side to resize the images to (bilinear, anti-aliased); None keeps H x W.

    Item:
        image: float32 (1, size, size) in [-1, 1] (or (1, H, W) when size is None).
        caption: str, e.g. "a photo of a sneaker".
        attributes: {"label": int, "class_name": str}.
    """

    def __init__(self, images: Tensor, labels: Tensor, class_names: tuple[str, ...], template: str,
                 size: int | None = None) -> None:
        self.images, self.labels = images, labels
        self.class_names, self.template, self.size = class_names, template, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        label = int(self.labels[index])
        image = self.images[index].float()[None] / 127.5 - 1  # (1, H, W) in [-1, 1]
        if self.size is not None:
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                                  align_corners=False)[0].clamp(-1, 1)  # (1, size, size)
        name = self.class_names[label]
        return {"image": image, "caption": self.template.format(name=name),
                "attributes": {"label": label, "class_name": name}}


def _copy_from_mirror(folder: Path, subfolder: str, resources: list[tuple[str, str]]) -> None:
    """Copy the idx .gz files from $TINYLDM_DATASET_MIRROR/subfolder into folder unless they are already there."""
    mirror = Path(os.environ[MIRROR_VAR]) / subfolder
    missing = [gz for gz, _ in resources if not (folder / gz).exists() and not (folder / gz[: -len(".gz")]).exists()]
    absent = [gz for gz in missing if not (mirror / gz).is_file()]
    if absent:
        raise FileNotFoundError(f"{MIRROR_VAR} is set, but {mirror} lacks {', '.join(absent)}; put the original idx "
                                f".gz files there, or unset {MIRROR_VAR} to download them")
    folder.mkdir(parents=True, exist_ok=True)
    for gz in missing:
        shutil.copyfile(mirror / gz, folder / gz)


def _load(cls: type[MNIST], subfolder: str, root: str | Path | None, split: str, size: int | None) -> tuple:
    """Load one split of a torchvision MNIST-style dataset, offline through the mirror when one is set."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}; e.g. size=32 to match Shapes")
    root = Path(root).expanduser() if root is not None else default_root()
    if os.environ.get(MIRROR_VAR):
        _copy_from_mirror(root / cls.__name__ / "raw", subfolder, cls.resources)
    try:
        # With the files in place this verifies their md5s and extracts them; it downloads only what is missing.
        data = cls(str(root), train=split == "train", download=True)
    except RuntimeError as error:
        raise RuntimeError(f"could not get {cls.__name__} into {root}: {error}\nOffline? Set {MIRROR_VAR} to a folder "
                           f"with {subfolder}/ holding the original idx .gz files.") from error
    return data.data, data.targets


def mnist(root: str | Path | None = None, split: str = "train", size: int | None = None) -> CaptionedImages:
    """MNIST digits (LeCun et al. 1998) captioned "a handwritten digit 7".

    Args:
        root: dataset folder; default ``$TINYLDM_CACHE/datasets`` or ``~/.cache/tinyldm/datasets``.
        split: "train" (60,000 images) or "test" (10,000).
        size: optional image side to resize to; None keeps 28.

    Returns:
        CaptionedImages whose items hold image float32 (1, 28, 28) (or (1, size, size)) in [-1, 1], caption and
        attributes {"label", "class_name"}.
    """
    images, labels = _load(MNIST, "mnist", root, split, size)
    return CaptionedImages(images, labels, MNIST_CLASSES, "a handwritten digit {name}", size)


def fashion_mnist(root: str | Path | None = None, split: str = "train", size: int | None = None) -> CaptionedImages:
    """Fashion-MNIST (Xiao et al. 2017) captioned "a photo of a sneaker", "a photo of an ankle boot".

    Args:
        root: dataset folder; default ``$TINYLDM_CACHE/datasets`` or ``~/.cache/tinyldm/datasets``.
        split: "train" (60,000 images) or "test" (10,000).
        size: optional image side to resize to; None keeps 28.

    Returns:
        CaptionedImages whose items hold image float32 (1, 28, 28) (or (1, size, size)) in [-1, 1], caption and
        attributes {"label", "class_name"}.
    """
    images, labels = _load(FashionMNIST, "fashion-mnist", root, split, size)
    names = tuple(("an " if name[0] in "aeiou" else "a ") + name for name in FASHION_MNIST_CLASSES)
    return CaptionedImages(images, labels, FASHION_MNIST_CLASSES, "a photo of {article_name}", size)
