"""Lesson 8's checkers: the latent mask is checked against the package, the strength experiment by measuring."""

import pytest
import torch
import torch.nn.functional as F

from tinyldm.data.shapes import parse_caption
from tinyldm.exercises import applications
from tinyldm.exercises.applications import check_latent_mask, check_moving_strength, position_edits


def test_the_max_pool_passes_and_a_thresholded_mean_is_caught(capsys):
    check_latent_mask(lambda mask, f: F.max_pool2d(mask, f))
    assert capsys.readouterr().out.startswith("[ok] latent_mask")
    with pytest.raises(AssertionError, match="any pixel of its f x f patch"):
        check_latent_mask(lambda mask, f: (F.avg_pool2d(mask, f) > 0.5).float())
    check_latent_mask(lambda mask, f: None)
    assert capsys.readouterr().out.startswith("[todo] latent_mask")


def test_position_edits_move_only_the_place():
    images, prompts = position_edits(n=12)
    again, same_prompts = position_edits(n=12)
    assert images.shape == (12, 3, 32, 32) and torch.equal(images, again) and prompts == same_prompts
    from tinyldm.data.shapes import Shapes

    test = Shapes(12, split="test", seed=0)
    for i, prompt in enumerate(prompts):
        old, new = test[i]["attributes"], parse_caption(prompt)
        assert new["position"] != old["position"]
        assert {k: new[k] for k in ("color", "shape", "size")} == {k: old[k] for k in ("color", "shape", "size")}


def test_the_strength_experiment_wants_about_the_smallest_strength(monkeypatch, capsys):
    measured = {0.5: 0.3, 0.6: 0.84, 0.7: 0.97, 0.8: 1.0}
    monkeypatch.setattr(applications, "position_success",
                        lambda ldm, judge, s, images, prompts: measured[round(s, 2)])
    check_moving_strength(lambda: 0.7, None, None)
    assert "at strength 0.70, 97% of 32 moves came out right, and at 0.60 only 84%" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="fewer than 90%. Hint: more noise"):
        check_moving_strength(lambda: 0.6, None, None)
    with pytest.raises(AssertionError, match="0.70 also moves 97%"):
        check_moving_strength(lambda: 0.8, None, None)
    with pytest.raises(AssertionError, match=r"strength in \(0, 1\]"):
        check_moving_strength(lambda: 1.5, None, None)
    check_moving_strength(lambda: None, None, None)
    assert capsys.readouterr().out.startswith("[todo] moving_strength")
