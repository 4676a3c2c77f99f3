"""SDEdit: strength picks the step, strength 1 is plain generation, small strengths stay near the input."""

import pytest
import torch

from tinyldm.data.shapes import shapes_tensor
from tinyldm.img2img import img2img, strength_start
from tinyldm.reverse_step import ddim_timesteps

PROMPTS = ["a large red circle at the top left", "a small blue square on the left"]


def _images(n=2):
    return shapes_tensor(n, size=32, seed=3)


@pytest.mark.parametrize("strength, expected", [(1.0, (999, 50)), (0.5, (499, 25)), (0.3, (299, 15)),
                                                (0.001, (19, 1))])
def test_strength_runs_the_last_share_of_the_sampler_sequence(strength, expected):
    assert strength_start(1000, 50, strength) == expected
    t_start, n = expected
    assert ddim_timesteps(1000, 50)[-n] == t_start


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++"])
def test_strength_one_is_plain_generation_from_the_same_noise(tiny_ldm, sampler):
    plain = tiny_ldm.sample(PROMPTS, steps=5, sampler=sampler, generator=torch.Generator().manual_seed(4),
                            progress=False)
    edited = img2img(tiny_ldm, _images(), PROMPTS, strength=1.0, steps=5, sampler=sampler,
                     generator=torch.Generator().manual_seed(4), progress=False)
    assert torch.equal(edited, plain)


def test_the_sampler_starts_at_the_strengths_step_from_the_noised_latents(tiny_ldm, monkeypatch):
    seen = {}
    original = tiny_ldm.sample

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_ldm, "sample", spy)
    images = _images()
    out = img2img(tiny_ldm, images, PROMPTS, strength=0.4, steps=10, generator=torch.Generator().manual_seed(0),
                  progress=False)
    assert out.shape == (2, 3, 32, 32)
    t_start = ddim_timesteps(50, 10)[-4]
    assert seen["t_start"] == t_start
    eps = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    ab = tiny_ldm.schedule.alpha_bars[t_start]
    torch.testing.assert_close(seen["xT"], ab.sqrt() * tiny_ldm.encode_images(images) + (1 - ab).sqrt() * eps)


def test_the_same_seed_gives_the_same_edit(tiny_ldm):
    def run(seed):
        return img2img(tiny_ldm, _images(), PROMPTS, 0.5, steps=6, sampler="ddpm",
                       generator=torch.Generator().manual_seed(seed), progress=False)

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


@pytest.mark.parametrize("strength", [0, -0.1, 1.5, float("nan"), True])
def test_a_strength_outside_zero_one_is_refused(tiny_ldm, strength):
    with pytest.raises(ValueError, match=r"strength must lie in \(0, 1\], got"):
        img2img(tiny_ldm, _images(), PROMPTS, strength=strength, steps=5, progress=False)


@pytest.mark.parametrize("images, message", [
    (torch.zeros(2, 3, 16, 16), r"images must have shape \(B, 3, 32, 32\), the size this model draws, got "
                                r"\(2, 3, 16, 16\); resize the pictures to 32x32 first"),
    (torch.zeros(3, 32, 32), r"got \(3, 32, 32\); add a batch dimension with x\[None\]"),
    (torch.zeros(2, 1, 32, 32), r"got \(2, 1, 32, 32\)"),
])
def test_images_of_the_wrong_shape_are_refused(tiny_ldm, images, message):
    with pytest.raises(ValueError, match=message):
        img2img(tiny_ldm, images, PROMPTS, strength=0.5, steps=5, progress=False)


def test_other_bad_inputs_are_refused(tiny_ldm):
    with pytest.raises(TypeError, match="images must be a float tensor"):
        img2img(tiny_ldm, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), PROMPTS, progress=False)
    with pytest.raises(ValueError, match="got 1 prompts for 2 images; pass one prompt per image"):
        img2img(tiny_ldm, _images(), PROMPTS[:1], strength=0.5, steps=5, progress=False)
