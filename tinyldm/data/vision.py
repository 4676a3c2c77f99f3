"""MNIST and Fashion-MNIST with captions, in the same item format as Shapes.

torchvision does the downloading, the md5 checks and the idx parsing. For offline machines, set
``TINYLDM_DATASET_MIRROR`` to a folder holding ``mnist/`` and ``fashion-mnist/`` with the original idx ``.gz`` files:
they are copied into the cache and torchvision verifies and extracts them without touching the network.
"""

import numbers
import os
import shutil
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["MNIST_CLASSES", "FASHION_MNIST_CLASSES", "CaptionedImages", "default_root", "mnist", "fashion_mnist"]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot")
_SPLITS = ("train", "test")
_MIRROR_VAR = "TINYLDM_DATASET_MIRROR"
_CACHE_VAR = "TINYLDM_CACHE"


def default_root() -> Path:
    """Where datasets are stored: ``$TINYLDM_CACHE/datasets``, or ``~/.cache/tinyldm/datasets``."""
    return Path(os.environ.get(_CACHE_VAR) or Path.home() / ".cache" / "tinyldm") / "datasets"


class CaptionedImages(Dataset):
    """A labelled grey-scale image dataset with one caption per class; items like Shapes' items.

    Args:
        images: uint8 (N, H, W) in 0-255.
        labels: int64 (N,) class indices.
        class_names: one lower-case name per class.
        captions: one caption per class, e.g. "a handwritten digit 7".
        size: optional side to resize the images to (bilinear, anti-aliased); None keeps H x W.

    Item:
        image: float32 (1, size, size) in [-1, 1] (or (1, H, W) when size is None).
        caption: str, e.g. "a photo of a sneaker".
        attributes: {"label": int, "class_name": str}.
    """

    def __init__(self, images: Tensor, labels: Tensor, class_names: tuple[str, ...], captions: tuple[str, ...],
                 size: int | None = None) -> None:
        self.images, self.labels = images, labels
        self.class_names, self.captions, self.size = class_names, captions, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        label = int(self.labels[index])
        image = self.images[index].float()[None] / 127.5 - 1  # (1, H, W) in [-1, 1]
        if self.size is not None:
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                                  align_corners=False)[0].clamp(-1, 1)  # (1, size, size)
        return {"image": image, "caption": self.captions[label],
                "attributes": {"label": label, "class_name": self.class_names[label]}}


def _copy_from_mirror(folder: Path, mirror: Path, resources: list[tuple[str, str]]) -> None:
    """Copy the idx .gz files named in resources from mirror into folder unless they (or their extracts) are there."""
    missing = [gz for gz, _ in resources if not (folder / gz).exists() and not (folder / gz[: -len(".gz")]).exists()]
    absent = [gz for gz in missing if not (mirror / gz).is_file()]
    if absent:
        raise FileNotFoundError(f"{_MIRROR_VAR} is set, but {mirror} lacks {', '.join(absent)}; put the original idx "
                                f".gz files there, or unset {_MIRROR_VAR} to download them")
    folder.mkdir(parents=True, exist_ok=True)
    for gz in missing:
        shutil.copyfile(mirror / gz, folder / gz)


def _load(name: str, subfolder: str, root: str | Path | None, split: str, size: int | None) -> tuple[Tensor, Tensor]:
    """Load one split of torchvision's MNIST or FashionMNIST, offline through the mirror when one is set.

    Returns:
        images uint8 (N, 28, 28) and labels int64 (N,).
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {_SPLITS}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral)):
        raise TypeError(f"size must be an int or None, got {size!r} of type {type(size).__name__}; e.g. size=32")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}; pass e.g. size=32 to match Shapes, or None to keep 28")
    import torchvision.datasets  # imported here: it takes about a second, and Shapes users never need it

    cls = getattr(torchvision.datasets, name)
    root = Path(root).expanduser() if root is not None else default_root()
    mirror = os.environ.get(_MIRROR_VAR)
    if mirror:
        _copy_from_mirror(root / name / "raw", Path(mirror) / subfolder, cls.resources)
    try:
        # With the files in place this verifies their md5s and extracts them; it downloads only what is missing.
        data = cls(str(root), train=split == "train", download=True)
    except RuntimeError as error:
        hint = (f"{_MIRROR_VAR}={mirror}: check that {subfolder}/ there holds the original idx .gz files (torchvision "
                f"checks their md5)" if mirror else
                f"offline? Set {_MIRROR_VAR} to a folder whose {subfolder}/ holds the original idx .gz files")
        raise RuntimeError(f"could not get {name} into {root}: {error}\n{hint}") from error
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
    images, labels = _load("MNIST", "mnist", root, split, size)
    captions = tuple(f"a handwritten digit {name}" for name in MNIST_CLASSES)
    return CaptionedImages(images, labels, MNIST_CLASSES, captions, size)


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
    images, labels = _load("FashionMNIST", "fashion-mnist", root, split, size)
    captions = tuple(f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}" for name in FASHION_MNIST_CLASSES)
    return CaptionedImages(images, labels, FASHION_MNIST_CLASSES, captions, size)
