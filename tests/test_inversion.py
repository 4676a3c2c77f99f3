"""DDIM inversion: the inverse step undoes the DDIM step, inversion then sampling returns near the data (closer with
more steps) for the optimal Gaussian predictor, slerp's endpoints and norms, and the pipeline functions."""

import pytest
import torch

from tinyldm.data.shapes import shapes_tensor
from tinyldm.inversion import Inversion, ddim_inversion_step, ddim_invert, interpolate_images, invert_images, slerp
from tinyldm.reverse_step import ddim_step
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule, extract

MU, S = 0.3, 0.7


def _gaussian_eps_model(mu, s, schedule):
    """The optimal (MMSE) noise predictor for data N(mu, s^2) per coordinate, as in tests/test_sampling.py:
    E[eps | x_t] = sqrt(1 - ab) / (ab s^2 + 1 - ab) (x_t - sqrt(ab) mu)."""

    def model(xt, t):
        ab = extract(schedule.alpha_bars, t, xt).double()
        return ((1 - ab).sqrt() / (ab * s**2 + 1 - ab) * (xt - ab.sqrt() * mu)).to(xt.dtype)

    return model


def _data(n=64, d=4, seed=0):
    return MU + S * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_inverse_step_undoes_the_ddim_step_for_the_same_eps():
    schedule = NoiseSchedule.linear(100)
    x_prev = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    xt = ddim_inversion_step(eps, 39, 59, x_prev, schedule)
    back = ddim_step(eps, torch.full((8,), 59), torch.full((8,), 39), xt, schedule)
    torch.testing.assert_close(back, x_prev)
    # from x0 itself (index -1), the step is q_sample with eps
    ab = schedule.alpha_bars[9]
    torch.testing.assert_close(ddim_inversion_step(eps, -1, 9, x_prev, schedule), ab.sqrt() * x_prev
                               + (1 - ab).sqrt() * eps)


def test_inversion_then_sampling_returns_near_the_data_and_closer_with_more_steps():
    schedule = NoiseSchedule.linear(1000)
    model = _gaussian_eps_model(MU, S, schedule)
    x0 = _data()
    errors = {}
    for steps in (10, 50, 250):
        xT = ddim_invert(model, x0, schedule, steps, progress=False)
        x0_rec = ddim_sample(model, tuple(x0.shape), schedule, steps, xT=xT, progress=False)
        errors[steps] = (x0_rec - x0).pow(2).mean().item()
    # first order in the step size: the squared error falls about as 1 / steps^2 (0.016, 0.00068, 0.000028)
    assert errors[250] < errors[50] / 10 < errors[10] / 100 < 1e-3 * x0.var().item()


def test_inverted_gaussian_data_is_standard_normal_noise():
    schedule = NoiseSchedule.linear(1000)
    x0 = _data(n=4096, d=2)
    xT = ddim_invert(_gaussian_eps_model(MU, S, schedule), x0, schedule, 100, progress=False)
    assert abs(xT.mean().item()) < 0.05 and abs(xT.std().item() - 1) < 0.05


def test_the_callback_sees_every_step_up_the_sequence():
    schedule = NoiseSchedule.linear(100)
    seen = []
    ddim_invert(lambda xt, t: torch.zeros_like(xt), torch.zeros(2, 2), schedule, 4, progress=False,
                callback=lambda info: seen.append((info["t_prev"], info["t"])))
    assert seen == [(-1, 24), (24, 49), (49, 74), (74, 99)]


def test_slerp_endpoints_and_norms():
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    torch.testing.assert_close(slerp(z_a, z_b, 0.0), z_a)
    torch.testing.assert_close(slerp(z_a, z_b, 1.0), z_b)
    z_b = z_b / z_b.flatten(1).norm(dim=1)[:, None, None, None] * z_a.flatten(1).norm(dim=1)[:, None, None, None]
    path = slerp(z_a, z_b, torch.linspace(0, 1, 5))  # (5, 3, 4, 8, 8)
    assert path.shape == (5, 3, 4, 8, 8)
    norms = path.flatten(2).norm(dim=2)  # (5, 3)
    torch.testing.assert_close(norms, z_a.flatten(1).norm(dim=1).expand(5, 3))
    straight = (0.5 * (z_a + z_b)).flatten(1).norm(dim=1)
    assert (straight < 0.8 * norms[2]).all()  # the straight line's midpoint cuts inside the sphere (~1/sqrt(2))
    torch.testing.assert_close(slerp(z_a, z_a, 0.3), z_a)  # parallel: the straight line, no division by zero


def test_slerp_refuses_bad_inputs():
    with pytest.raises(ValueError, match=r"z_a and z_b must have the same shape, got \(2, 3\) and \(2, 4\)"):
        slerp(torch.zeros(2, 3), torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match=r"w must lie in \[0, 1\] \(0 gives z_a, 1 gives z_b\), got 1.5"):
        slerp(torch.ones(2, 3), torch.ones(2, 3), 1.5)


def test_a_step_that_goes_down_is_refused():
    with pytest.raises(ValueError, match="an inverse step goes up the noise levels"):
        ddim_inversion_step(torch.zeros(1, 2), 10, 5, torch.zeros(1, 2), NoiseSchedule.linear(20))


def test_invert_images_reports_the_reconstruction(tiny_ldm):
    images = shapes_tensor(2, size=32, seed=5)
    prompts = ["a large red circle at the top left", "a small blue square on the left"]
    result = invert_images(tiny_ldm, images, prompts, steps=5, progress=False)
    assert isinstance(result, Inversion)
    assert result.zT.shape == result.z0.shape == result.z0_rec.shape == (2, 4, 8, 8)
    assert result.images_rec.shape == (2, 3, 32, 32)
    assert result.latent_mse().shape == (2,) and result.psnr().shape == (2,) and result.psnr("images_ae").shape == (2,)
    model, _ = tiny_ldm.denoiser(prompts, 1, 1.0)
    again = ddim_sample(model, (2, 4, 8, 8), tiny_ldm.schedule, 5, xT=result.zT, progress=False)
    assert torch.equal(again, result.z0_rec)
    with pytest.raises(ValueError, match="reference must be 'images' or 'images_ae'"):
        result.psnr("z0")
    with pytest.raises(ValueError, match="got 1 prompts for 2 images"):
        invert_images(tiny_ldm, images, prompts[:1], steps=5, progress=False)


def test_interpolation_ends_on_the_two_reconstructions(tiny_ldm):
    images = shapes_tensor(2, size=32, seed=6)
    prompt = "a large red circle at the top left"
    out = interpolate_images(tiny_ldm, images[0], images[1], prompt, weights=(0.0, 0.5, 1.0), steps=4,
                             progress=False)
    assert out.shape == (3, 3, 32, 32)
    rec = invert_images(tiny_ldm, images, [prompt, prompt], steps=4, progress=False).images_rec
    torch.testing.assert_close(out[[0, 2]], rec, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"image_b must have shape \(B, 3, 32, 32\)"):
        interpolate_images(tiny_ldm, images[0], torch.zeros(3, 16, 16), prompt, steps=4, progress=False)
