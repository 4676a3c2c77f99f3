"""Your own captioned pictures: the folder reader, its skip report and errors, (Fashion-)MNIST through the same
path, the round trip through a written folder, and the training commands on a folder."""

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from tinyldm.cli.main import main
from tinyldm.data.folder import ImageTextPairs, image_text_pairs, labelled_pairs, read_image_folder, write_image_folder
from tinyldm.data.vision import default_root, mnist
from tinyldm.ldm import LatentDiffusion
from tinyldm.perceptual import LPIPS_WEIGHTS_VAR

RED, BLUE, GREEN, WHITE = (220, 40, 40), (40, 90, 220), (40, 170, 70), (255, 255, 255)


def level(rgb):
    """A colour as the reader returns it: (3, 1, 1) in [-1, 1]."""
    return torch.tensor(rgb, dtype=torch.float32)[:, None, None] / 127.5 - 1


def bands(colours, vertical=False, side=16):
    """Side x side squares of the given colours, side by side (or stacked)."""
    image = Image.new("RGB", (side, side * len(colours)) if vertical else (side * len(colours), side))
    for k, colour in enumerate(colours):
        box = (0, k * side, side, (k + 1) * side) if vertical else (k * side, 0, (k + 1) * side, side)
        image.paste(colour, box)
    return image


def write_jsonl(folder, lines):
    (folder / "captions.jsonl").write_text("\n".join(line if isinstance(line, str) else json.dumps(line)
                                                     for line in lines) + "\n")


@pytest.fixture
def photos(tmp_path):
    """Four good pictures (one captioned twice), a corrupt file, a picture without caption, a caption for a
    missing file and an empty caption."""
    folder = tmp_path / "photos"
    (folder / "walks").mkdir(parents=True)
    bands([RED, BLUE, RED]).save(folder / "wide.png")  # 48x16: the centre crop keeps only the blue square
    bands([GREEN, WHITE, GREEN], vertical=True).save(folder / "walks" / "tall.jpg", quality=95, subsampling=0)
    Image.new("L", (40, 30), 128).save(folder / "grey.png")
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(folder / "clear.png")  # transparent black: laid on white
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    Image.new("RGB", (40, 30), RED).save(folder / "lonely.png")
    Image.new("RGB", (40, 30), RED).save(folder / "blank.png")
    (folder / ".hidden.png").write_bytes(b"macOS metadata")  # hidden files are ignored
    (folder / "notes.txt").write_text("not a picture, not captioned: ignored")
    write_jsonl(folder, [
        {"file": "wide.png", "caption": "a blue square between red bars"},
        {"file_name": "walks/tall.jpg", "text": "a white square"},  # Hugging Face's imagefolder keys
        {"file": "grey.png", "caption": " a grey picture "},
        {"file": "wide.png", "caption": "a wide picture"},
        "",
        {"file": "clear.png", "caption": "a white picture"},
        {"file": "broken.png", "caption": "a broken file"},
        {"file": "ghost.png", "caption": "a picture that is not there"},
        {"file": "blank.png", "caption": "  "},
    ])
    return folder


def test_reads_pairs_in_caption_order_resized_and_centre_cropped(photos):
    with pytest.warns(UserWarning):
        pairs = read_image_folder(photos, 16)
    assert isinstance(pairs, ImageTextPairs) and len(pairs) == 5 and pairs.size == 16
    assert pairs.images.shape == (5, 3, 16, 16) and pairs.images.dtype == torch.float32
    assert pairs.images.min() >= -1 and pairs.images.max() <= 1
    assert pairs.captions == ["a blue square between red bars", "a white square", "a grey picture",
                              "a wide picture", "a white picture"]
    assert pairs.files == ["wide.png", "walks/tall.jpg", "grey.png", "wide.png", "clear.png"]
    blue = level(BLUE).expand(3, 16, 16)
    assert torch.equal(pairs.images[0], blue) and torch.equal(pairs.images[3], blue)  # no red border is left
    assert (pairs.images[1] - level(WHITE)).abs().max() < 0.1  # the green top and bottom are cropped (JPEG)
    assert torch.equal(pairs.images[2], level((128, 128, 128)).expand(3, 16, 16))  # grey to RGB
    assert torch.equal(pairs.images[4], torch.ones(3, 16, 16))  # transparency becomes white
    item = pairs[1]
    assert item["caption"] == "a white square" and item["attributes"] == {"file": "walks/tall.jpg"}


def test_a_larger_picture_is_resized_by_its_shorter_side_with_antialiasing(tmp_path):
    stripes = torch.zeros(64, 96, 3, dtype=torch.uint8)
    stripes[:, ::3] = 255  # every third column white: a third of the light
    Image.fromarray(stripes.numpy()).save(tmp_path / "stripes.png")
    bands([RED, BLUE, RED], side=40).save(tmp_path / "wide.png")  # 120x40 -> 48x16 -> the blue centre
    write_jsonl(tmp_path, [{"file": "stripes.png", "caption": "stripes"}, {"file": "wide.png", "caption": "bars"}])
    pairs = read_image_folder(tmp_path, 16)
    assert (pairs.images[0] + 1 / 3).abs().max() < 0.02  # averaged to a third of white, not aliased into bands
    error = (pairs.images[1] - level(BLUE)).abs()  # (3, 16, 16); squashing 120x40 would mix in a third of red
    assert error[..., 2:-2].max() < 0.02 and error.max() < 0.15  # the kernel reaches the red only at the edges


def test_skips_are_counted_named_and_warned_once(photos):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = read_image_folder(photos, 8)
    assert len(caught) == 1 and str(caught[0].message) == pairs.summary()
    assert pairs.skipped == {"unreadable image": ["broken.png"], "image without caption": ["lonely.png"],
                             "caption without image": ["ghost.png"], "empty caption": ["blank.png"]}
    summary = pairs.summary()
    assert summary.startswith(f"5 image-caption pairs (4 images) at 8x8 from {photos}; skipped 4: ")
    for part in ("unreadable image: 1 (broken.png)", "image without caption: 1 (lonely.png)",
                 "caption without image: 1 (ghost.png)", "empty caption: 1 (blank.png)"):
        assert part in summary
    assert pairs.record()["skipped"] == {reason: 1 for reason in pairs.skipped}


def test_the_summary_names_the_first_five_files_per_reason(tmp_path):
    for k in range(7):
        Image.new("RGB", (8, 8)).save(tmp_path / f"extra{k}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "kept.png")
    write_jsonl(tmp_path, [{"file": "kept.png", "caption": "a black square"}])
    with pytest.warns(UserWarning, match=r"image without caption: 7 \(extra0.png, .*extra4.png, \.\.\.\)"):
        pairs = read_image_folder(tmp_path, 8)
    assert len(pairs.skipped["image without caption"]) == 7 and "extra5.png" not in pairs.summary()


@pytest.mark.parametrize("problem, message", [
    ("unreadable", r"cannot read the picture .*broken.png"),
    ("missing", r"captions.jsonl line 2 names ghost.png, which is not in"),
    ("empty", r"captions.jsonl line 2: the caption of blank.png is empty"),
    ("uncaptioned", r"the picture lonely.png in .* has no caption in captions.jsonl"),
])
def test_strict_stops_at_the_first_problem_naming_the_file(tmp_path, problem, message):
    bands([RED]).save(tmp_path / "good.png")
    lines = [{"file": "good.png", "caption": "a red square"}]
    if problem == "unreadable":
        (tmp_path / "broken.png").write_bytes(b"garbage")
        lines.append({"file": "broken.png", "caption": "a broken file"})
    elif problem == "missing":
        lines.append({"file": "ghost.png", "caption": "a picture that is not there"})
    elif problem == "empty":
        bands([BLUE]).save(tmp_path / "blank.png")
        lines.append({"file": "blank.png", "caption": ""})
    else:
        bands([BLUE]).save(tmp_path / "lonely.png")
    write_jsonl(tmp_path, lines)
    with pytest.raises(ValueError, match=message + r".*drop --strict, or pass strict=False"):
        read_image_folder(tmp_path, 8, strict=True)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert read_image_folder(tmp_path, 8).captions == ["a red square"]  # skipped without strict


def test_a_csv_caption_file_reads_the_same_pairs(photos):
    (photos / "captions.jsonl").unlink()
    (photos / "captions.csv").write_text('\ufefffile,caption\nwide.png,"bars, red and blue"\n'
                                         'walks/tall.jpg,a white square\nghost.png,nothing\n', encoding="utf-8")
    with pytest.warns(UserWarning, match="caption without image: 1 \\(ghost.png\\)"):
        pairs = read_image_folder(photos, 16)
    assert pairs.captions == ["bars, red and blue", "a white square"]
    assert torch.equal(pairs.images[0], level(BLUE).expand(3, 16, 16))
    (photos / "captions.csv").write_text("name,description\nwide.png,bars\n")
    with pytest.raises(ValueError, match=r"captions.csv: the header must name a file column .* got \['name'"):
        read_image_folder(photos, 16)


@pytest.mark.parametrize("text, message", [
    # An unclosed quote: a CSV reader runs the caption on into the next line and its picture goes uncaptioned.
    ('file,caption\nwide.png,"bars, red and blue\nwalks/tall.jpg,a white square\n',
     r"captions.csv line 2 has an unbalanced double quote, so its caption would run on into the next line"),
    ('file,caption\nwide.png,"bars\nred and blue"\nwalks/tall.jpg,a white square\n',
     r"captions.csv line 2 has an unbalanced double quote"),  # a caption spanning lines, even if it closes
    ('file,caption\nwide.png,a white square\nwalks/tall.jpg,a "white square\n',
     r"captions.csv line 3 has an unbalanced double quote.*double the quotes inside it"),
    ('file,caption\nwide.png,"bars" in red\n', r"captions.csv line 2 is not valid CSV \(',' expected"),
    ('file,caption\n\nwide.png,bars, red and blue\n',
     r"captions.csv line 3 has 3 fields but the header \['file', 'caption'\] has 2.*in quotes"),
])
def test_a_csv_caption_that_spans_lines_or_breaks_its_quotes_is_refused_naming_the_line(tmp_path, text, message):
    bands([RED, BLUE, RED]).save(tmp_path / "wide.png")
    (tmp_path / "walks").mkdir()
    bands([WHITE]).save(tmp_path / "walks" / "tall.jpg")
    (tmp_path / "captions.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_image_folder(tmp_path, 8)


def test_quoted_csv_captions_with_commas_and_doubled_quotes_still_read(tmp_path):
    bands([BLUE]).save(tmp_path / "a.png")
    bands([RED]).save(tmp_path / "b.png")
    (tmp_path / "captions.csv").write_bytes(b'file,caption\r\na.png,"a ""big"" square, blue"\r\nb.png,a "red" one\r\n')
    assert read_image_folder(tmp_path, 8).captions == ['a "big" square, blue', 'a "red" one']


@pytest.mark.parametrize("name, lines", [
    ("captions.csv", ["file,caption", "a.png,a square", "b.png,un carré bleu"]),
    ("captions.jsonl", ['{"file": "a.png", "caption": "a square"}', '{"file": "b.png", "caption": "un carré"}']),
])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_caption_file_that_is_not_utf8_is_named_with_its_line_and_byte(tmp_path, name, lines, bom):
    for file in ("a.png", "b.png"):
        bands([BLUE]).save(tmp_path / file)
    data = bom + "\n".join(lines).encode("cp1252") + b"\n"  # a spreadsheet's "CSV" on Windows
    (tmp_path / name).write_bytes(data)
    offset = data.index(b"\xe9")  # the é
    with pytest.raises(ValueError, match=rf"{name} is not UTF-8 text: line {len(lines)} \(byte {offset}\) holds "
                                         r"0xe9 .*save the file as UTF-8"):
        read_image_folder(tmp_path, 8)
    (tmp_path / name).write_bytes(data.replace(b"\xe9", "é".encode()))  # saved as UTF-8, it reads
    assert read_image_folder(tmp_path, 8).captions[1] in ("un carré bleu", "un carré")


def test_errors_a_command_line_user_sees_name_the_option_as_well_as_the_argument(tmp_path):
    bands([BLUE]).save(tmp_path / "a.png")
    bands([RED]).save(tmp_path / "lonely.png")
    write_jsonl(tmp_path, [{"file": "a.png", "caption": "a blue square"}])
    with pytest.raises(ValueError, match=r"drop --strict, or pass strict=False, to skip"):
        read_image_folder(tmp_path, 8, strict=True)
    with pytest.raises(ValueError, match=r"--image-size 32 \(size=32\)"):
        read_image_folder(tmp_path, 0)
    with pytest.warns(UserWarning, match="skipped 1"):
        pairs = read_image_folder(tmp_path, 8)
    with pytest.raises(ValueError, match=r"ask for 1 or fewer \(--num-images 1, num_images=1\)"):
        pairs.first(2)
    with pytest.raises(FileNotFoundError, match=r"\(--data DIR\)"):
        read_image_folder(tmp_path / "nowhere", 8)


@pytest.mark.parametrize("lines, message", [
    (['{"file": "a.png", "caption": "x"}', '{"file": "b.png", caption: y}'],
     r"captions.jsonl line 2 is not valid JSON \(Expecting property name"),
    (['["a.png", "x"]'], r"captions.jsonl line 1 is not a JSON object"),
    (['{"image": "a.png", "caption": "x"}'], r"line 1: expected a text 'file' \(or 'file_name'\), got the keys"),
    (['{"file": "a.png", "caption": 7}'], r"line 1: expected a text 'caption' \(or 'text'\), got caption=7"),
])
def test_a_bad_caption_line_is_named_by_its_number(tmp_path, lines, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    write_jsonl(tmp_path, lines)
    with pytest.raises(ValueError, match=message):
        read_image_folder(tmp_path, 8)


def test_folder_errors_name_the_folder_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a folder \(it does not exist\)"):
        read_image_folder(tmp_path / "nowhere", 8)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^mnist is not a folder"):  # a Path is a folder, not the dataset
        image_text_pairs(Path("mnist"), 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is empty: put your pictures there with a captions.jsonl"):
        read_image_folder(tmp_path / "empty", 8)
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"has no caption file: write captions.jsonl there"):
        read_image_folder(tmp_path / "empty", 8)
    (tmp_path / "text").mkdir()
    write_jsonl(tmp_path / "text", [{"file": "a.png", "caption": "x"}])
    with pytest.raises(ValueError, match=r"text holds no pictures \(.bmp"):
        read_image_folder(tmp_path / "text", 8)
    write_jsonl(tmp_path / "empty", [{"file": "a.png", "caption": "x"}])
    (tmp_path / "empty" / "metadata.csv").write_text("file_name,text\na.png,x\n")
    with pytest.raises(ValueError, match=r"several caption files \(captions.jsonl, metadata.csv\)"):
        read_image_folder(tmp_path / "empty", 8)
    (tmp_path / "empty" / "metadata.csv").unlink()
    (tmp_path / "empty" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"no usable image-caption pairs in .*empty \(1 unreadable image\)"):
        read_image_folder(tmp_path / "empty", 8)
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        read_image_folder(tmp_path / "empty", 0)


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch, write_idx):
    """TINYLDM_CACHE holding tiny extracted MNIST and FashionMNIST files (no mirror, no network)."""
    monkeypatch.delenv("TINYLDM_DATASET_MIRROR", raising=False)
    monkeypatch.setenv("TINYLDM_CACHE", str(tmp_path / "cache"))
    images = torch.zeros(4, 28, 28, dtype=torch.uint8)
    images[1] = 255
    images[2, :, :14] = 255  # left half white
    images[3, 7:21, 7:21] = 200
    for name in ("MNIST", "FashionMNIST"):
        for prefix in ("train", "t10k"):
            write_idx(default_root() / name / "raw", prefix, images, torch.tensor([7, 0, 9, 7], dtype=torch.uint8))
    return tmp_path / "cache"


def test_mnist_becomes_pairs_with_class_captions(tiny_cache):
    pairs = labelled_pairs(mnist(split="test"), 32)
    assert pairs.images.shape == (4, 3, 32, 32) and pairs.source == "mnist"
    assert pairs.captions == ["a handwritten digit 7", "a handwritten digit 0", "a handwritten digit 9",
                              "a handwritten digit 7"]
    assert torch.equal(pairs.images[:, 0], pairs.images[:, 2])  # grey in all three channels
    assert (pairs.images[0] == -1).all() and (pairs.images[1] == 1).all()
    assert pairs.images[2, 0, 5, 2] == 1 and pairs.images[2, 0, 5, -3] == -1  # resized, not cropped away
    clothes = image_text_pairs("fashion-mnist", 16, num_images=3)
    assert clothes.captions == ["a photo of a sneaker", "a photo of a t-shirt", "a photo of an ankle boot"]
    assert clothes.images.shape == (3, 3, 16, 16) and clothes.files[2] == "fashion-mnist/00002"
    with pytest.raises(ValueError, match="asked for 5 images but mnist has only 4 usable image-caption pairs"):
        image_text_pairs("mnist", 16, num_images=5)
    with pytest.raises(ValueError, match="the number of images must be a positive int, got 0"):
        pairs.first(0)


def test_written_folders_read_back_exactly(tiny_cache, tmp_path):
    pairs = image_text_pairs("mnist", 16)
    path = write_image_folder(pairs, tmp_path / "digits")
    assert path.name == "captions.jsonl" and len(path.read_text().splitlines()) == 4
    back = read_image_folder(tmp_path / "digits", 16)
    assert back.captions == pairs.captions and back.files == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert torch.equal(back.images, ((pairs.images + 1) * 127.5).round() / 127.5 - 1)  # up to 8-bit rounding
    assert back.images_sha256() == read_image_folder(tmp_path / "digits", 16).images_sha256()
    assert back.images_sha256() != read_image_folder(tmp_path / "digits", 8).images_sha256()
    with pytest.raises(FileExistsError, match="already has a caption file"):
        write_image_folder(pairs, tmp_path / "digits")


def _real_mnist_available() -> bool:
    return bool(os.environ.get("TINYLDM_DATASET_MIRROR")) or (default_root() / "MNIST" / "raw").is_dir()


@pytest.mark.skipif(not _real_mnist_available(),
                    reason="set TINYLDM_DATASET_MIRROR to a folder with mnist/ and fashion-mnist/ idx .gz files "
                           "(or fill the dataset cache) to read the real datasets")
def test_real_mnist_and_fashion_mnist_through_the_same_path():
    digits = image_text_pairs("mnist", 32, num_images=64)
    assert digits.images.shape == (64, 3, 32, 32) and digits.captions[0] == "a handwritten digit 5"
    assert len(set(digits.captions)) == 10 and -1 <= digits.images.min() < digits.images.max() <= 1
    clothes = image_text_pairs("fashion-mnist", 32, num_images=8)
    assert clothes.captions[0] == "a photo of an ankle boot"  # the first Fashion-MNIST training item


# ---------------------------------------------------------------- training on a folder


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    """Six 40x30 pictures captioned with words Shapes never uses."""
    folder = tmp_path_factory.mktemp("pets")
    captions = ["a black cat", "a white dog", "a black dog", "a white cat sleeping", "a red ball", "a cat and a ball"]
    lines = []
    for k, text in enumerate(captions):
        Image.new("RGB", (40, 30), (40 * k, 255 - 40 * k, 128)).save(folder / f"pet{k}.png")
        lines.append({"file": f"pet{k}.png", "caption": text})
    write_jsonl(folder, lines)
    return folder


@pytest.mark.slow
def test_train_ldm_on_a_folder_learns_its_words_and_generates(pets, tiny_autoencoder, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setenv("TINYLDM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "ldm", "--config", "tiny", "--data", str(pets), "--autoencoder", str(tiny_autoencoder),
                 "--out", str(out), "--steps", "2", "--batch-size", "2"]) == 0
    ldm = LatentDiffusion.from_pretrained(out)
    vocabulary = ldm.text_encoder.config.vocabulary
    assert {"cat", "dog", "ball", "sleeping", "black"} <= set(vocabulary) and "circle" not in vocabulary
    assert ldm.text_encoder.max_length == 2 + 5  # "a cat and a ball" and [CLS] [SEP]
    run = json.loads((out / "run.json").read_text())["runs"][0]
    assert run["data"]["source"] == str(pets) and run["data"]["pairs"] == 6 and run["distinct_captions"] == 6
    settings = json.loads((out / "train_config.json").read_text())
    assert settings["unconditional"] is False and len(settings["captions_sha256"]) == 64
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--prompt", "a white dog sleeping", "--num-images", "2",
                 "--steps", "2", "--sampler", "ddim", "--out", str(tmp_path / "generated")]) == 0
    assert Image.open(tmp_path / "generated" / "sample_001.png").size == (32, 32)
    assert main(["generate", "--checkpoint", str(out), "--prompt", "a large red circle", "--num-images", "1",
                 "--steps", "2", "--out", str(tmp_path / "g2")]) == 2
    assert "never saw: ['large', 'circle']" in capsys.readouterr().err


@pytest.mark.slow
def test_train_ldm_on_mnist_and_at_another_size(tiny_cache, tiny_autoencoder, tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["train", "ldm", "--config", "tiny", "--data", "mnist", "--autoencoder", str(tiny_autoencoder),
                 "--out", str(out), "--steps", "1", "--batch-size", "2", "--image-size", "16"]) == 0
    ldm = LatentDiffusion.from_pretrained(out)
    assert ldm.latent_shape == (4, 4, 4) and set(ldm.text_encoder.config.vocabulary) == {
        "a", "handwritten", "digit", "7", "0", "9"}
    assert main(["train", "ldm", "--config", "tiny", "--data", "mnist", "--autoencoder", str(tiny_autoencoder),
                 "--out", str(tmp_path / "bad"), "--steps", "1", "--image-size", "24"]) == 2
    assert "the latents are 6x6 (image size 24 / f = 4), not a multiple of 4" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_train_pixel_on_a_folder_records_it_and_refuses_to_resume_on_changed_pictures(pets, tmp_path, capsys):
    folder = tmp_path / "pets"
    folder.mkdir()
    for path in pets.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "run"
    args = ["train", "pixel", "--config", "tiny", "--data", str(folder), "--out", str(out), "--batch-size", "2",
            "--image-size", "16"]
    assert main([*args, "--steps", "1"]) == 0
    run = json.loads((out / "run.json").read_text())["runs"][0]
    assert run["data"]["pairs"] == 6 and run["image_size"] == 16
    assert json.loads((out / "schedule.json").read_text())["image_size"] == 16
    assert main([*args, "--steps", "2", "--resume"]) == 0  # the same pictures resume
    Image.new("RGB", (40, 30), (0, 0, 0)).save(folder / "pet0.png")
    capsys.readouterr()
    assert main([*args, "--steps", "3", "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "pixel", "--config", "tiny", "--data", str(folder), "--out", str(tmp_path / "bad"),
                 "--image-size", "18"]) == 2
    assert "image size 18x18 is not a multiple of 4" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(["train", "pixel", "--config", "tiny", "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "bad")]) == 2
    assert "none is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_train_autoencoder_on_a_folder(pets, tmp_path, capsys):
    if not os.environ.get(LPIPS_WEIGHTS_VAR):
        pytest.skip(f"the autoencoder presets use LPIPS: set {LPIPS_WEIGHTS_VAR} to run it offline")
    out = tmp_path / "autoencoder"
    assert main(["train", "autoencoder", "--config", "tiny", "--data", str(pets), "--out", str(out), "--steps",
                 "1", "--batch-size", "2"]) == 0
    assert json.loads((out / "run.json").read_text())["runs"][0]["data"]["source"] == str(pets)
    assert main(["train", "autoencoder", "--config", "tiny", "--data", str(pets), "--out", str(tmp_path / "bad"),
                 "--image-size", "30"]) == 2
    assert "image size 30 is not a multiple of 4: the autoencoder downsamples 2 times; use 32" in \
        capsys.readouterr().err
    assert main(["train", "autoencoder", "--config", "tiny", "--data", str(pets), "--out", str(tmp_path / "bad"),
                 "--image-size", "16"]) == 2
    assert "image size 16 is too small for the tiny preset's LPIPS loss" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
