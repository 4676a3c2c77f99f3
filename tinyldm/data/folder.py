"""Your own captioned images: a folder of pictures and a caption file, read into training tensors.

The layout (the same as Hugging Face's ``imagefolder`` with a metadata file)::

    pictures/
        captions.jsonl      {"file": "cat01.png", "caption": "a black cat on a sofa"}   one object per line
        cat01.png
        walks/dog07.jpg     a name may include sub-folders, relative to pictures/

The caption file is ``captions.jsonl`` or ``captions.csv`` (header ``file,caption``); Hugging Face's
``metadata.jsonl`` / ``metadata.csv`` are read too. A line names its picture with ``file`` (or ``file_name``) and
its caption with ``caption`` (or ``text``); when a line has both spellings, the first of each pair wins. A picture
may have several lines: each one is a training pair. Hidden files (names starting with ".") are ignored. The file is
UTF-8, and in ``captions.csv`` every caption fits on its line: one that holds a comma or a quote goes in double
quotes, with its own quotes doubled (``cat01.png,"a ""black"" cat, on a sofa"``).

Every picture becomes RGB (EXIF rotation applied, transparency laid on white), its shorter side is resized to
``size`` (bicubic, anti-aliased) and the centre ``size`` x ``size`` square is kept, with
``torchvision.transforms.v2``. Problems that a large folder always has (an unreadable file, a picture without a
caption, a caption for a file that is not there, an empty caption) are skipped with one warning that counts them
and names the first files; ``strict=True`` (``--strict`` on the command line) raises at the first one instead,
naming the file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tinyldm.data.vision import CaptionedImages, fashion_mnist, mnist

__all__ = ["IMAGE_EXTENSIONS", "CAPTION_FILES", "SKIP_REASONS", "NAMED_DATASETS", "ImageTextPairs",
           "read_image_folder", "labelled_pairs", "image_text_pairs", "write_image_folder"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
CAPTION_FILES = ("captions.jsonl", "captions.csv", "metadata.jsonl", "metadata.csv")
SKIP_REASONS = ("unreadable image", "image without caption", "caption without image", "empty caption")
NAMED_DATASETS = ("mnist", "fashion-mnist")  # names that ``image_text_pairs`` reads instead of a folder
_FILE_KEYS, _CAPTION_KEYS = ("file", "file_name"), ("caption", "text")
_EXAMPLE = '{"file": "cat01.png", "caption": "a black cat on a sofa"}'
_CSV_EXAMPLE = 'cat01.png,"a ""black"" cat, on a sofa"'
_SHOWN = 5  # file names shown per skip reason
_PROGRESS_FROM = 500  # images; a progress bar by default from this many


@dataclass(eq=False)  # pairs of tensors compare with torch.equal, not ==
class ImageTextPairs(Dataset):
    """Training pairs of image and caption; items like Shapes' items.

    Item:
        image: float32 (3, S, S) in [-1, 1]; caption: str; attributes: {"file": str}.
    """

    images: Tensor  # (N, 3, S, S) float32 in [-1, 1]
    captions: list[str]  # N captions, one per image
    files: list[str]  # N names: each pair's picture, relative to the folder (or e.g. "mnist/00042")
    source: str  # where the pairs came from: the folder, "mnist" or "fashion-mnist"
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason (SKIP_REASONS) -> the files skipped

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "caption": self.captions[index], "attributes": {"file": self.files[index]}}

    @property
    def size(self) -> int:
        """S, the side of every image."""
        return self.images.shape[-1]

    def summary(self) -> str:
        """One line: how many pairs from where, and what was skipped and why, naming the first files."""
        line = (f"{len(self)} image-caption pairs ({len(set(self.files))} images) at {self.size}x{self.size} from "
                f"{self.source}")
        if not self.skipped:
            return line
        parts = [f"{reason}: {len(names)} ({', '.join(names[:_SHOWN])}{', ...' if len(names) > _SHOWN else ''})"
                 for reason, names in self.skipped.items()]
        return f"{line}; skipped {sum(map(len, self.skipped.values()))}: " + "; ".join(parts)

    def images_sha256(self) -> str:
        """SHA-256 of the image tensor (shape and values): names the exact images, e.g. in a latent cache key."""
        digest = hashlib.sha256(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def captions_sha256(self) -> str:
        """SHA-256 of the captions in order."""
        return hashlib.sha256(json.dumps(self.captions).encode()).hexdigest()

    def record(self) -> dict:
        """A JSON-ready description for a run's settings: source, counts, size, hashes, skip counts."""
        return {"source": self.source, "pairs": len(self), "image_size": self.size,
                "images_sha256": self.images_sha256(), "captions_sha256": self.captions_sha256(),
                "skipped": {reason: len(names) for reason, names in self.skipped.items()}}

    def first(self, n: int) -> ImageTextPairs:
        """The first ``n`` pairs (the skip report is kept)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"the number of images must be a positive int, got {n!r}")
        if n > len(self):
            raise ValueError(f"asked for {n} images but {self.source} has only {len(self)} usable image-caption "
                             f"pairs; ask for {len(self)} or fewer (--num-images {len(self)}, num_images={len(self)}), "
                             "or leave the number out to use them all")
        return ImageTextPairs(self.images[:n], self.captions[:n], self.files[:n], self.source, self.skipped)


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"size must be an int, got {size!r} of type {type(size).__name__}; e.g. size=32")
    if size < 1:
        raise ValueError(f"the image size must be >= 1, got {size}; give the training image side in pixels, e.g. "
                         "--image-size 32 (size=32)")
    return int(size)


def _resize_crop(size: int):
    """uint8 (..., C, H, W) or a PIL image -> uint8 (..., C, size, size): shorter side to size, centre square."""
    from torchvision.transforms import v2  # imported here: torchvision takes seconds, and Shapes users never need it

    return v2.Compose([v2.ToImage(), v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                       v2.CenterCrop(size)])


def _rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparent parts become white (converting RGBA straight to RGB shows hidden colours)."""
    image = ImageOps.exif_transpose(image)  # phone pictures store their rotation in EXIF
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _caption_file(folder: Path) -> Path:
    found = [folder / name for name in CAPTION_FILES if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{folder} has no caption file: write captions.jsonl there with one line per image, "
                                f"e.g. {_EXAMPLE} (or captions.csv with the header file,caption)")
    if len(found) > 1:
        raise ValueError(f"{folder} has several caption files ({', '.join(p.name for p in found)}); keep one")
    return found[0]


def _field(record: dict, keys: tuple[str, str], path: Path, line: int) -> str:
    key = next((k for k in keys if k in record), None)
    if key is None or not isinstance(record[key], str):
        got = f"{key}={record[key]!r}" if key is not None else f"the keys {sorted(record)}"
        raise ValueError(f"{path} line {line}: expected a text {keys[0]!r} (or {keys[1]!r}), got {got}; write "
                         f"lines like {_EXAMPLE}")
    return record[key]


def _read_text(path: Path) -> str:
    """The caption file's text; a file that is not UTF-8 is named with the line and byte where it stops being so."""
    data = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # spreadsheets start with a BOM
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = bom + error.start  # in the file, counting the BOM
        line = data[:offset].count(b"\n") + 1
        raise ValueError(f"{path} is not UTF-8 text: line {line} (byte {offset}) holds 0x{data[offset]:02x} "
                         f"({error.reason}); save the file as UTF-8 (in a spreadsheet choose \"CSV UTF-8\", in a "
                         "text editor the encoding UTF-8)") from None


def _csv_rows(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of a CSV caption file, each line parsed on its own.

    A quote that does not close on its line would let the CSV reader run the caption on into the next lines,
    silently swallowing their pictures, so a record must fit on one line and its quotes must pair up.
    """
    rows = []
    for number, line in enumerate(io.StringIO(text, newline=""), 1):  # newline="": \n, \r\n and \r end lines
        if not line.strip():
            continue
        shown = line.rstrip("\r\n")[:80]
        if line.count('"') % 2:
            raise ValueError(f"{path} line {number} has an unbalanced double quote, so its caption would run on into "
                             f"the next line: {shown!r}; every caption must fit on its line: close the quote, or put "
                             f"the whole caption in quotes and double the quotes inside it, e.g. {_CSV_EXAMPLE}")
        try:
            (row,) = csv.reader([line], strict=True)
        except csv.Error as error:
            raise ValueError(f"{path} line {number} is not valid CSV ({error}): {shown!r}; put a caption that holds "
                             "commas or quotes in quotes and double the quotes inside it, e.g. "
                             f"{_CSV_EXAMPLE}") from None
        rows.append((number, row))
    return rows


def _read_captions(path: Path) -> list[tuple[int, str, str]]:
    """The caption file's (line number, file name, caption) entries, in file order."""
    text = _read_text(path)
    entries = []
    if path.suffix == ".csv":
        rows = _csv_rows(path, text)
        header = rows[0][1] if rows else []
        keys = [next((k for k in pair if k in header), None) for pair in (_FILE_KEYS, _CAPTION_KEYS)]
        if None in keys:
            raise ValueError(f"{path}: the header must name a file column and a caption column "
                             f"(file,caption or file_name,text), got {header}")
        for number, row in rows[1:]:
            if len(row) != len(header):
                # More fields than columns is most often a caption with an unquoted comma, cut at the comma.
                raise ValueError(f"{path} line {number} has {len(row)} fields but the header {header} has "
                                 f"{len(header)}: {row}; put a caption that holds commas in quotes, e.g. "
                                 f"{_CSV_EXAMPLE}")
            record = dict(zip(header, row))
            entries.append((number, *(_field(record, (k, k), path, number) for k in keys)))
        return entries
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not valid JSON ({error.msg}): {line[:80]!r}; write one "
                             f"object per line, e.g. {_EXAMPLE}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {number} is not a JSON object: {line[:80]!r}; e.g. {_EXAMPLE}")
        entries.append((number, _field(record, _FILE_KEYS, path, number), _field(record, _CAPTION_KEYS, path, number)))
    return entries


def read_image_folder(folder: str | Path, size: int, strict: bool = False,
                      progress: bool | None = None) -> ImageTextPairs:
    """Read a folder of captioned pictures (see the module's docstring for the layout) at ``size`` x ``size``.

    Args:
        folder: the folder holding the pictures and the caption file.
        size: S, the training image side.
        strict: raise at the first unreadable picture, uncaptioned picture, caption without picture or empty
            caption, naming the file, instead of skipping it.
        progress: show a progress bar; by default only from 500 pictures.
    Returns:
        ImageTextPairs with images (N, 3, S, S) in [-1, 1], in the caption file's order, and what was skipped.
    """
    size = _check_size(size)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder{'' if folder.exists() else ' (it does not exist)'}: "
                                "give the folder holding your pictures and their captions.jsonl (--data DIR)")
    if not any(folder.iterdir()):
        raise ValueError(f"{folder} is empty: put your pictures there with a captions.jsonl naming each one, "
                         f"e.g. {_EXAMPLE}")
    path = _caption_file(folder)
    pictures = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                      if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not pictures:
        raise ValueError(f"{folder} holds no pictures ({', '.join(IMAGE_EXTENSIONS)}); put the images that "
                         f"{path.name} names next to it")
    skipped: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}

    def skip(reason: str, name: str, message: str) -> None:
        if strict:
            raise ValueError(f"{message} (stopped by --strict, strict=True: drop --strict, or pass strict=False, to "
                             "skip such files with a warning)")
        skipped[reason].append(name)

    entries = []
    for line, name, text in _read_captions(path):
        name = PurePosixPath(name).as_posix()
        if not (folder / name).is_file():
            skip("caption without image", name, f"{path} line {line} names {name}, which is not in {folder}")
        elif not text.strip():
            skip("empty caption", name, f"{path} line {line}: the caption of {name} is empty; describe the picture "
                                        "(the empty caption is reserved for classifier-free guidance)")
        else:
            entries.append((name, text.strip()))
    captioned = {name for name, _ in entries} | set(skipped["empty caption"])
    for name in pictures:
        if name not in captioned:
            skip("image without caption", name, f"the picture {name} in {folder} has no caption in {path.name}; "
                                                 f"add a line like {{\"file\": \"{name}\", \"caption\": \"...\"}}")
    transform, read = _resize_crop(size), {}
    names = list(dict.fromkeys(name for name, _ in entries))
    show = len(names) >= _PROGRESS_FROM if progress is None else progress
    for name in tqdm(names, desc=f"reading {folder.name}", unit="image", disable=not show):
        try:
            with Image.open(folder / name) as image:
                read[name] = transform(_rgb(image)).as_subclass(Tensor)  # (3, S, S) uint8
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            skip("unreadable image", name, f"cannot read the picture {folder / name}: {error}; replace or remove it")
    pairs = [(name, text) for name, text in entries if name in read]
    skipped = {reason: names for reason, names in skipped.items() if names}
    if not pairs:
        counts = ", ".join(f"{len(v)} {k}" for k, v in skipped.items()) or "nothing to pair"
        raise ValueError(f"no usable image-caption pairs in {folder} ({counts}); check that {path.name} names the "
                         "pictures by their paths relative to the folder")
    images = torch.stack([read[name] for name, _ in pairs]).float() / 127.5 - 1  # (N, 3, S, S) in [-1, 1]
    result = ImageTextPairs(images, [text for _, text in pairs], [name for name, _ in pairs], str(folder), skipped)
    if skipped:
        warnings.warn(result.summary(), stacklevel=2)
    return result


def labelled_pairs(dataset: CaptionedImages, size: int, num_images: int | None = None,
                   source: str = "mnist") -> ImageTextPairs:
    """(Fashion-)MNIST as ImageTextPairs: class captions ("a handwritten digit 7"), 3 channels, size x size.

    Args:
        dataset: ``tinyldm.data.vision.mnist()`` or ``fashion_mnist()``; its own ``size`` is ignored (the 28x28
            originals are resized here, like a folder's pictures).
        size: S.
        num_images: keep the first this many; all when None.
        source: the name recorded in the pairs, e.g. "fashion-mnist".
    """
    size = _check_size(size)
    grey = dataset.images[:num_images, None]  # (N, 1, 28, 28) uint8
    transform = _resize_crop(size)
    resized = torch.cat([transform(grey[i:i + 4096]).as_subclass(Tensor) for i in range(0, len(grey), 4096)])
    images = resized.expand(-1, 3, -1, -1).float() / 127.5 - 1  # (N, 3, S, S): grey in all three channels
    labels = dataset.labels[:num_images].tolist()
    return ImageTextPairs(images, [dataset.captions[k] for k in labels],
                          [f"{source}/{i:05d}" for i in range(len(labels))], source)


def image_text_pairs(source: str | Path, size: int, num_images: int | None = None, strict: bool = False,
                     progress: bool | None = None) -> ImageTextPairs:
    """Training pairs from a folder (``read_image_folder``) or a named dataset ("mnist", "fashion-mnist": the
    train split through ``labelled_pairs``). A folder called mnist is read as one when given as ./mnist or a Path.

    Args:
        source: the folder or the dataset's name.
        size: S.
        num_images: keep the first this many pairs; all when None.
        strict, progress: see ``read_image_folder``.
    """
    if isinstance(source, str) and source in NAMED_DATASETS:
        load = mnist if source == "mnist" else fashion_mnist
        pairs = labelled_pairs(load(split="train"), size, num_images, source=source)
    else:
        pairs = read_image_folder(source, size, strict, progress)
    return pairs if num_images is None else pairs.first(num_images)


def write_image_folder(pairs: ImageTextPairs, folder: str | Path) -> Path:
    """Write pairs as PNG files 00000.png, 00001.png ... and a captions.jsonl: a folder ``read_image_folder``
    reads back (at the same size, exactly). Returns the caption file's path."""
    folder = Path(folder)
    if any((folder / name).exists() for name in CAPTION_FILES):
        raise FileExistsError(f"{folder} already has a caption file; write into a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ((pairs.images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (N, 3, S, S)
    lines = []
    for i, (image, text) in enumerate(zip(pixels, pairs.captions)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
        lines.append(json.dumps({"file": f"{i:05d}.png", "caption": text}))
    path = folder / "captions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
