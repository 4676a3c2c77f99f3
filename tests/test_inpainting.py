"""Blended inpainting: the known pixels come back exactly, the latent mask covers every cell the hole touches, the
known latents are replaced at every step, and bad masks are refused with a clear message."""

import pytest
import torch

from tinyldm.data.shapes import shapes_tensor
from tinyldm.inpainting import box_mask, check_mask, downsample_mask, inpaint

PROMPTS = ["a large red circle at the top left", "a small blue square on the left"]


def _images(n=2):
    return shapes_tensor(n, size=32, seed=7)


def test_box_mask_is_end_exclusive():
    mask = box_mask(6, 8, (1, 2, 4, 5))
    assert mask.shape == (6, 8) and mask.sum() == 3 * 3
    assert mask[2, 1] == 1 and mask[4, 3] == 1 and mask[5, 3] == 0 and mask[4, 4] == 0 and mask[1, 1] == 0
    assert box_mask(4, 4, (0, 0, 4, 4)).all()


@pytest.mark.parametrize("box", [(0, 0, 9, 4), (-1, 0, 2, 2), (2, 0, 2, 3), (0, 3, 2, 1)])
def test_a_box_outside_the_image_or_empty_is_refused(box):
    with pytest.raises(ValueError, match=r"is not a non-empty box inside the 8x6 image: need 0 <= x0 < x1 <= 8"):
        box_mask(6, 8, box)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_the_latent_mask_covers_every_cell_the_hole_touches(factor):
    g = torch.Generator().manual_seed(factor)
    mask = (torch.rand(3, 1, 32, 32, generator=g) > 0.97).float()  # scattered single pixels
    small = downsample_mask(mask, factor)
    assert small.shape == (3, 1, 32 // factor, 32 // factor)
    touched = mask.unfold(2, factor, factor).unfold(3, factor, factor).amax(dim=(-1, -2))  # (3, 1, h, w)
    assert torch.equal(small, touched)
    one_pixel = box_mask(32, 32, (5, 9, 6, 10))[None, None]
    cell = downsample_mask(one_pixel, 4)
    assert cell.sum() == 1 and cell[0, 0, 9 // 4, 5 // 4] == 1


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_pixels_outside_the_mask_are_kept_exactly(tiny_ldm, sampler):
    images = _images()
    mask = box_mask(32, 32, (8, 4, 21, 19))
    out = inpaint(tiny_ldm, images, mask, PROMPTS, steps=4, sampler=sampler,
                  generator=torch.Generator().manual_seed(0), progress=False)
    assert out.shape == images.shape
    assert torch.equal(out[..., mask == 0], images[..., mask == 0])
    assert not torch.equal(out[..., mask == 1], images[..., mask == 1])


def test_the_known_latents_are_the_noised_originals_after_every_step(tiny_ldm, monkeypatch):
    images = _images()
    mask = box_mask(32, 32, (0, 0, 13, 32))  # latent columns 0..3 regenerated (13 px touches column 3)
    z0 = tiny_ldm.encode_images(images)
    seen = []
    original = tiny_ldm.sample

    def spy(*args, **kwargs):
        hook = kwargs["after_step"]

        def watched(info):
            x_prev = hook(info)
            seen.append((info["t_prev"], info["x_prev"], x_prev))
            return x_prev

        return original(*args, **{**kwargs, "after_step": watched})

    monkeypatch.setattr(tiny_ldm, "sample", spy)
    inpaint(tiny_ldm, images, mask, PROMPTS, steps=5, generator=torch.Generator().manual_seed(0), progress=False)
    assert len(seen) == 5
    for t_prev, before, after in seen:
        torch.testing.assert_close(after[..., :4], before[..., :4], rtol=0, atol=0)  # the hole: the sampler's
        if t_prev == -1:
            torch.testing.assert_close(after[..., 4:], z0[..., 4:], rtol=0, atol=0)  # the last step: z0 itself
        else:  # noised to t_prev: sqrt(ab) z0 + sqrt(1 - ab) eps with eps of unit size
            ab = tiny_ldm.schedule.alpha_bars[t_prev]
            eps = (after[..., 4:] - ab.sqrt() * z0[..., 4:]) / (1 - ab).sqrt()
            assert 0.6 < eps.std().item() < 1.4


def test_one_mask_serves_every_image_and_the_same_seed_gives_the_same_picture(tiny_ldm):
    images = _images()
    mask = box_mask(32, 32, (4, 4, 12, 12))

    def run(m):
        return inpaint(tiny_ldm, images, m, PROMPTS, steps=3, generator=torch.Generator().manual_seed(3),
                       progress=False)

    assert torch.equal(run(mask), run(mask[None, None].expand(2, 1, 32, 32)))
    assert torch.equal(run(mask.bool()), run(mask))


@pytest.mark.parametrize("mask, message", [
    (torch.ones(16, 16), r"mask must be \(32, 32\) or \(2, 1, 32, 32\), the images' size, got \(1, 1, 16, 16\)"),
    (torch.ones(3, 1, 32, 32), r"got \(3, 1, 32, 32\)"),
    (torch.ones(2, 3, 32, 32), r"got \(2, 3, 32, 32\)"),
    (torch.full((32, 32), 0.5), r"mask must be black and white, 1 in the hole and 0 elsewhere, but it holds 1024 "
                                r"other values \(e.g. 0.5\); threshold it: \(mask > 0.5\).float\(\)"),
    (torch.zeros(32, 32), r"the mask is empty \(no pixel is 1\) for at least one image: there is nothing to inpaint"),
    (torch.stack([torch.ones(1, 32, 32), torch.zeros(1, 32, 32)]), "the mask is empty"),
])
def test_bad_masks_are_refused(mask, message):
    with pytest.raises(ValueError, match=message):
        check_mask(mask, torch.zeros(2, 3, 32, 32))


def test_inpaint_refuses_bad_images_and_prompts(tiny_ldm):
    mask = box_mask(32, 32, (0, 0, 8, 8))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 32, 32\)"):
        inpaint(tiny_ldm, torch.zeros(1, 3, 64, 64), mask, PROMPTS[:1], steps=2, progress=False)
    with pytest.raises(ValueError, match="got 1 prompts for 2 images"):
        inpaint(tiny_ldm, _images(), mask, PROMPTS[:1], steps=2, progress=False)
    with pytest.raises(TypeError, match="mask must be a tensor"):
        inpaint(tiny_ldm, _images(), [[1]], PROMPTS, steps=2, progress=False)


def test_resampling_calls_the_model_r_times_per_step_and_still_keeps_the_outside(tiny_ldm, monkeypatch):
    images, mask = shapes_tensor(2, 32, seed=1), box_mask(32, 32, (8, 8, 24, 24))
    calls = []
    forward = tiny_ldm.unet.forward
    monkeypatch.setattr(tiny_ldm.unet, "forward", lambda *a, **k: calls.append(a[0].shape[0]) or forward(*a, **k))
    once = inpaint(tiny_ldm, images, mask, PROMPTS, steps=4, generator=torch.Generator().manual_seed(0),
                   progress=False)
    n_once, calls[:] = len(calls), []
    thrice = inpaint(tiny_ldm, images, mask, PROMPTS, steps=4, generator=torch.Generator().manual_seed(0),
                     progress=False, resample=3)
    assert len(calls) == n_once + 2 * 3  # each of the 3 steps before the last is taken twice more
    assert torch.equal(thrice[:, :, mask == 0], images[:, :, mask == 0]) and not torch.equal(thrice, once)
    with pytest.raises(ValueError, match="resample must be a whole number >= 1"):
        inpaint(tiny_ldm, images, mask, PROMPTS, steps=4, resample=0)
