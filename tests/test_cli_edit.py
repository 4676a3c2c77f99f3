"""`tinyldm img2img`, `tinyldm inpaint` and `tinyldm upscale` write the edits and a side-by-side figure, keep what
they must, and refuse bad pictures, masks, boxes and models with a clear message."""

import numpy as np
import pytest
from PIL import Image

from tinyldm.cli.main import main
from tinyldm.concat_conditioning import downsample_images
from tinyldm.data.shapes import shapes_tensor
from tinyldm.viz.images import save_grid

PROMPT = "a large red circle at the top left"


@pytest.fixture
def picture(tmp_path):
    return save_grid(shapes_tensor(1, size=32, seed=2), tmp_path / "circle.png")


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_img2img_writes_each_edit_and_the_figure(tmp_path, picture, tiny_ldm_folder, capsys):
    out = tmp_path / "out"
    code, printed, _ = _run(["img2img", "--image", str(picture), "--prompt", PROMPT, "--strength", "0.5", "--out",
                             str(out), "--checkpoint", str(tiny_ldm_folder), "--steps", "4", "--num-images", "2",
                             "--device", "cpu"], capsys)
    assert code == 0
    for name in ("circle_img2img_0.png", "circle_img2img_1.png", "circle_img2img.png"):
        assert (out / name).is_file() and str(out / name) in printed
    with Image.open(out / "circle_img2img.png") as figure:  # input | start | 2 outputs, 2px padding, scale 4
        assert figure.size == (4 * (4 * 34 + 2), 4 * (1 * 34 + 2))
    with Image.open(out / "circle_img2img_0.png") as edit:
        assert edit.size == (32, 32)


def test_inpaint_with_a_box_keeps_every_pixel_outside_it(tmp_path, picture, tiny_ldm_folder, capsys):
    out = tmp_path / "out"
    code, printed, _ = _run(["inpaint", "--image", str(picture), "--box", "8,4,20,16", "--prompt", PROMPT, "--out",
                             str(out), "--checkpoint", str(tiny_ldm_folder), "--steps", "3", "--device", "cpu"],
                            capsys)
    assert code == 0
    assert str(out / "circle_inpaint.png") in printed and (out / "circle_inpaint_0.png").is_file()
    before = np.asarray(Image.open(picture).convert("RGB"))
    after = np.asarray(Image.open(out / "circle_inpaint_0.png").convert("RGB"))
    keep = np.ones((32, 32), bool)
    keep[4:16, 8:20] = False
    assert (after[keep] == before[keep]).all() and (after[~keep] != before[~keep]).any()


def test_inpaint_reads_a_mask_file_thresholded_at_half(tmp_path, picture, tiny_ldm_folder, capsys):
    mask = np.zeros((32, 32), np.uint8)
    mask[10:20, 10:20] = 200  # light grey counts as white
    mask[0:2, 0:2] = 100  # dark grey as black
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    code, _, _ = _run(["inpaint", "--image", str(picture), "--mask", str(tmp_path / "mask.png"), "--prompt", PROMPT,
                       "--out", str(out), "--checkpoint", str(tiny_ldm_folder), "--steps", "2", "--device", "cpu"],
                      capsys)
    assert code == 0
    before = np.asarray(Image.open(picture).convert("RGB"))
    after = np.asarray(Image.open(out / "circle_inpaint_0.png").convert("RGB"))
    assert (after[0:2, 0:2] == before[0:2, 0:2]).all()


@pytest.fixture(scope="module")
def concat_folders(tmp_path_factory, tiny_ldm):
    """Tiny inpainting and super-resolution models fine-tuned from nothing: the tiny pipeline with extra channels."""
    from tinyldm.concat_conditioning import ConcatConditionedLDM

    root = tmp_path_factory.mktemp("concat")
    return {kind: ConcatConditionedLDM.from_base(tiny_ldm, kind).save_pretrained(root / kind) for kind in ("inpaint",
                                                                                                            "sr")}


def test_method_trained_inpaints_with_a_model_that_reads_the_hole(tmp_path, picture, concat_folders, capsys):
    out = tmp_path / "out"
    code, printed, _ = _run(["inpaint", "--image", str(picture), "--box", "8,8,24,24", "--prompt", PROMPT,
                             "--method", "trained", "--checkpoint", str(concat_folders["inpaint"]), "--out", str(out),
                             "--steps", "2", "--device", "cpu"], capsys)
    assert code == 0 and str(out / "circle_inpaint.png") in printed
    before = np.asarray(Image.open(picture).convert("RGB"))
    after = np.asarray(Image.open(out / "circle_inpaint_0.png").convert("RGB"))
    assert (after[:8] == before[:8]).all() and (after[:, 24:] == before[:, 24:]).all()
    code, _, err = _run(["inpaint", "--image", str(picture), "--box", "8,8,24,24", "--prompt", PROMPT, "--method",
                         "trained", "--resample", "2", "--checkpoint", str(concat_folders["inpaint"]), "--out",
                         str(out)], capsys)
    assert code == 2 and "--resample 2 is RePaint's resampling for --method blend" in err


@pytest.mark.parametrize("method, model, message", [
    ("trained", "text-to-image", "describes a LatentDiffusion, which has no image-conditioning input channels"),
    ("trained", "sr", "--method trained needs a model with inpainting channels"),
    ("blend", "inpaint", "describes a ConcatConditionedLDM"),
])
def test_a_method_and_a_model_that_do_not_fit_are_refused(tmp_path, picture, tiny_ldm_folder, concat_folders, capsys,
                                                          method, model, message):
    folder = tiny_ldm_folder if model == "text-to-image" else concat_folders[model]
    code, _, err = _run(["inpaint", "--image", str(picture), "--box", "0,0,8,8", "--prompt", PROMPT, "--method",
                         method, "--checkpoint", str(folder), "--out", str(tmp_path / "out"), "--steps", "2"], capsys)
    assert code == 2 and message in err


def test_upscale_writes_each_upscaling_and_the_figure(tmp_path, concat_folders, capsys):
    low = save_grid(downsample_images(shapes_tensor(1, size=32, seed=2)), tmp_path / "small.png")
    out = tmp_path / "out"
    code, printed, _ = _run(["upscale", "--image", str(low), "--out", str(out), "--checkpoint",
                             str(concat_folders["sr"]), "--steps", "2", "--num-images", "2", "--device", "cpu"], capsys)
    assert code == 0
    for name in ("small_upscale_0.png", "small_upscale_1.png", "small_upscale.png"):
        assert (out / name).is_file() and str(out / name) in printed
    with Image.open(out / "small_upscale_0.png") as result:
        assert result.size == (32, 32)


def test_upscale_refuses_a_picture_of_another_size_and_a_model_of_another_kind(tmp_path, picture, tiny_ldm_folder,
                                                                               concat_folders, capsys):
    code, _, err = _run(["upscale", "--image", str(picture), "--out", str(tmp_path / "out"), "--checkpoint",
                         str(concat_folders["sr"])], capsys)
    assert code == 2 and "is 32x32 pixels but this model upscales 8x8 pictures to 32x32" in err
    low = save_grid(downsample_images(shapes_tensor(1, size=32, seed=2)), tmp_path / "small.png")
    for folder, message in ((concat_folders["inpaint"], "upscale needs a super-resolution model"),
                            (tiny_ldm_folder, "which has no image-conditioning input channels")):
        code, _, err = _run(["upscale", "--image", str(low), "--out", str(tmp_path / "out"), "--checkpoint",
                             str(folder)], capsys)
        assert code == 2 and message in err


@pytest.mark.parametrize("extra, message", [
    (["--box", "0,0,40,8"], "is not a non-empty box inside the 32x32 image"),
    (["--box", "4,4,4,8"], "is not a non-empty box inside the 32x32 image"),
    (["--mask", "small.png"], "the mask {tmp}/small.png is 16x16 pixels but the model draws 32x32 images"),
    (["--mask", "black.png"], "the mask is empty (no pixel is 1)"),
    (["--mask", "missing.png"], "no mask at {tmp}/missing.png"),
])
def test_bad_masks_and_boxes_are_reported(tmp_path, picture, tiny_ldm_folder, capsys, extra, message):
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "black.png")
    extra = [e if e.startswith("--") or "," in e else str(tmp_path / e) for e in extra]
    code, _, err = _run(["inpaint", "--image", str(picture), "--prompt", PROMPT, "--out", str(tmp_path / "out"),
                         "--checkpoint", str(tiny_ldm_folder), "--steps", "2", "--device", "cpu", *extra], capsys)
    assert code == 2 and "tinyldm inpaint: error:" in err
    assert message.format(tmp=tmp_path) in err


def test_a_picture_of_another_size_is_reported(tmp_path, tiny_ldm_folder, capsys):
    save_grid(shapes_tensor(1, size=64, seed=0), tmp_path / "big.png")
    code, _, err = _run(["img2img", "--image", str(tmp_path / "big.png"), "--prompt", PROMPT, "--out",
                         str(tmp_path / "out"), "--checkpoint", str(tiny_ldm_folder), "--device", "cpu"], capsys)
    assert code == 2
    assert f"the image {tmp_path / 'big.png'} is 64x64 pixels but the model draws 32x32 images; resize it" in err


@pytest.mark.parametrize("argv, message", [
    (["img2img", "--image", "a.png", "--out", "x", "--strength", "0"], "expected a strength in (0, 1]"),
    (["img2img", "--image", "a.png", "--out", "x", "--strength", "1.5"], "expected a strength in (0, 1]"),
    (["img2img", "--image", "a.png", "--out", "x", "--strength", "half"], "expected a number in (0, 1], got 'half'"),
    (["img2img", "--out", "x"], "the following arguments are required: --image"),
    (["inpaint", "--image", "a.png", "--out", "x"], "one of the arguments --mask --box is required"),
    (["inpaint", "--image", "a.png", "--out", "x", "--box", "1,2,3"], "expected four whole numbers X0,Y0,X1,Y1"),
    (["inpaint", "--image", "a.png", "--out", "x", "--box", "1,2,3,4", "--mask", "m.png"], "not allowed with"),
    (["inpaint", "--image", "a.png", "--out", "x", "--box", "1,2,3,4", "--method", "repaint"],
     "argument --method: invalid choice: 'repaint'"),
])
def test_bad_edit_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
