"""Datasets for the course: captioned Shapes (offline, the default), 2-D toy data, captioned (Fashion-)MNIST, and
your own captioned pictures (a folder with a captions.jsonl)."""

from tinyldm.data.folder import (
    CAPTION_FILES, IMAGE_EXTENSIONS, NAMED_DATASETS, SKIP_REASONS, ImageTextPairs, image_text_pairs, labelled_pairs,
    read_image_folder, write_image_folder,
)
from tinyldm.data.shapes import (
    COLORS, HELD_OUT, MIN_SIZE, POSITIONS, SHAPES, SIZES, SPLITS, Shapes, caption, parse_caption, render,
)
from tinyldm.data.toy import TOY_KINDS, toy_2d
from tinyldm.data.vision import (
    FASHION_MNIST_CLASSES, MNIST_CLASSES, CaptionedImages, default_root, fashion_mnist, mnist,
)

__all__ = [
    "COLORS", "SHAPES", "SIZES", "POSITIONS", "HELD_OUT", "SPLITS", "MIN_SIZE", "Shapes", "caption", "parse_caption",
    "render", "TOY_KINDS", "toy_2d", "MNIST_CLASSES", "FASHION_MNIST_CLASSES", "CaptionedImages", "default_root",
    "mnist", "fashion_mnist", "IMAGE_EXTENSIONS", "CAPTION_FILES", "SKIP_REASONS", "NAMED_DATASETS", "ImageTextPairs",
    "read_image_folder", "labelled_pairs", "image_text_pairs", "write_image_folder",
]
