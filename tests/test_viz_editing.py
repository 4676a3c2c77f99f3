"""Lesson 8's widgets: each control redraws the picture by running the edit, and bad input is refused."""

import io

import pytest
import torch
from PIL import Image

from tinyldm.data.shapes import shapes_tensor
from tinyldm.viz.editing import img2img_explorer, inpaint_explorer

PROMPT = "a large red circle at the top left"


def test_the_strength_slider_and_the_prompt_redraw_the_edit(tiny_ldm):
    widget = img2img_explorer(tiny_ldm, shapes_tensor(1, 32)[0], PROMPT, steps=4)
    strength, text = widget.children[0].children
    picture = widget.children[1]
    first = picture.value
    assert Image.open(io.BytesIO(first)).size == (2 * 32 * 6 + 6 * 6, 32 * 6 + 4 * 6)  # input | edit, enlarged
    strength.value = 1.0
    assert picture.value != first
    at_one = picture.value
    text.value = "a small blue square at the bottom right"
    assert picture.value != at_one


def test_the_box_sliders_move_the_hole_and_an_empty_box_keeps_the_last_picture(tiny_ldm):
    widget = inpaint_explorer(tiny_ldm, shapes_tensor(1, 32), PROMPT, box=(0, 0, 16, 16), steps=3)
    xs, ys = widget.children[0].children
    picture = widget.children[2]
    first = picture.value
    xs.value = (8, 24)
    assert picture.value != first
    moved = picture.value
    ys.value = (5, 5)
    assert picture.value == moved


def test_a_batch_is_refused_with_its_shape(tiny_ldm):
    with pytest.raises(ValueError, match=r"edits one image.*\(2, 3, 32, 32\)"):
        img2img_explorer(tiny_ldm, torch.zeros(2, 3, 32, 32), PROMPT)
