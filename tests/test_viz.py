"""Pictures checked by their pixels, files read back with Pillow, and figures inspected through matplotlib."""

import io
import math
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tinyldm.schedule import NoiseSchedule, q_trajectory  # noqa: E402
from tinyldm.viz import explorer  # noqa: E402
from tinyldm.viz import images as viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def random_images(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_to_pil_grid_size_follows_make_grid_layout():
    # 5 images, 3 per row: 2 rows; each cell is the image plus a 2-pixel gap, plus the outer 2-pixel border.
    picture = viz.to_pil(random_images((5, 3, 8, 6)), nrow=3)
    assert picture.mode == "RGB"
    assert picture.size == (3 * (6 + 2) + 2, 2 * (8 + 2) + 2)
    assert viz.to_pil(random_images((5, 3, 8, 6)), nrow=3, scale=4).size == (4 * 26, 4 * 22)


def test_to_pil_maps_minus_one_to_black_and_one_to_white_and_clips():
    images = torch.zeros(2, 1, 4, 4)
    images[0] = -1.0
    images[1] = 1.0
    images[1, 0, 0, 0] = 7.0  # out of range: clipped to white
    images[0, 0, 0, 0] = -3.0  # clipped to black
    pixels = np.asarray(viz.to_pil(images, nrow=2))  # (4 + 4, 2 * 6 + 2): grey, one channel
    assert pixels.ndim == 2
    assert (pixels[2:6, 2:6] == 0).all()
    assert (pixels[2:6, 8:12] == 255).all()
    assert pixels[0, 0] not in (0, 255)  # the gap colour tells the images apart


def test_to_pil_midpoint_is_mid_grey():
    pixels = np.asarray(viz.to_pil(torch.zeros(1, 3, 2, 2)))  # a single image: no border
    assert pixels.shape == (2, 2, 3)
    assert (pixels == 128).all()  # (0 + 1) / 2 * 255 = 127.5, rounded half to even


def test_save_grid_writes_a_png_of_the_grid_size(tmp_path):
    path = viz.save_grid(random_images((4, 3, 8, 8)), tmp_path / "new" / "dir" / "grid.png", nrow=2, scale=3)
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert picture.size == (3 * (2 * 10 + 2), 3 * (2 * 10 + 2))


def test_show_images_draws_the_grid_without_ticks():
    images = random_images((4, 3, 8, 8))
    ax = viz.show_images(images, nrow=2, title="samples")
    np.testing.assert_array_equal(ax.images[0].get_array(), np.asarray(viz.to_pil(images, nrow=2)))
    assert ax.get_title() == "samples"
    assert not ax.axison


def test_save_gif_has_one_frame_per_step_and_loops(tmp_path):
    frames = random_images((6, 2, 3, 8, 8))
    path = viz.save_gif(frames, tmp_path / "chain.gif", fps=20, nrow=2, scale=2, hold_last=2.0)
    with Image.open(path) as gif:
        assert gif.n_frames == 6
        assert gif.info["loop"] == 0
        assert gif.size == (2 * (2 * 10 + 2), 2 * (10 + 2))
        durations = []
        for k in range(gif.n_frames):
            gif.seek(k)
            durations.append(gif.info["duration"])
    assert durations == [50] * 5 + [2000]


def test_animation_html_embeds_every_frame():
    frames = random_images((5, 3, 1, 8, 8))
    html = viz.animation_html(frames, labels=[f"t = {k}" for k in range(5)], fps=5)
    assert len(re.findall(r'frames\[\d+\] = "data:image/png;base64,', html.data)) == 5
    assert not plt.get_fignums()  # nothing left in pyplot for the notebook to print as a static copy


def test_plot_chain_has_one_axis_per_image_and_step_with_titles():
    frames = random_images((4, 3, 3, 8, 8))
    steps = [-1, 0, 49, 99]
    fig = viz.plot_chain(frames, steps)
    assert len(fig.axes) == 3 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["x0", "t = 0", "t = 49", "t = 99"]
    # Row-major: image 2 at step 49 is axis 2 * 4 + 2, and shows exactly that frame.
    np.testing.assert_array_equal(fig.axes[10].images[0].get_array(), np.asarray(viz.to_pil(frames[2, 2:3])))


def test_plot_chain_draws_q_trajectory_output():
    schedule = NoiseSchedule.linear(num_steps=20)
    record = [-1, 9, 19]
    frames = q_trajectory(random_images((2, 1, 8, 8)), schedule, record, generator=torch.Generator().manual_seed(0))
    fig = viz.plot_chain(frames, record)
    assert len(fig.axes) == 2 * 3


def test_plot_schedules_draws_one_line_per_schedule_on_each_panel():
    schedules = {"linear": NoiseSchedule.linear(num_steps=100), "cosine": NoiseSchedule.cosine(num_steps=50)}
    fig = viz.plot_schedules(schedules)
    ax_bar, ax_snr = fig.axes
    assert [line.get_label() for line in ax_bar.get_lines()] == ["linear", "cosine"]
    np.testing.assert_allclose(ax_bar.get_lines()[1].get_ydata(), schedules["cosine"].alpha_bars.numpy())
    alpha_bars = schedules["linear"].alpha_bars.double().numpy()
    expected = np.log10(alpha_bars / (1 - alpha_bars))
    np.testing.assert_allclose(ax_snr.get_lines()[0].get_ydata(), expected, rtol=1e-4)
    assert len(ax_bar.get_legend().get_texts()) == 2


def draw(x0, eps, t, schedule, nrow):
    fig, axes = plt.subplots(1, 4)
    xt = explorer.draw_forward_state(axes, x0, eps, t, schedule, nrow=nrow)
    return axes, xt


def test_draw_forward_state_shows_the_closed_form_xt():
    schedule = NoiseSchedule.linear(num_steps=100)
    x0, eps = random_images((4, 3, 8, 8), seed=1), torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = 40
    axes, xt = draw(x0, eps, t, schedule, nrow=2)
    # Ho et al. 2020, Eq. 4, computed here from the betas in double precision.
    alpha_bar = math.prod(1 - beta for beta in schedule.betas.double().tolist()[: t + 1])
    expected = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps
    torch.testing.assert_close(xt, expected)
    np.testing.assert_array_equal(axes[0].images[0].get_array(), np.asarray(viz.to_pil(expected, nrow=2)))
    # The markers sit at t on both curves.
    assert axes[2].get_lines()[1].get_xdata()[0] == t
    assert axes[2].get_lines()[1].get_ydata()[0] == pytest.approx(alpha_bar, rel=1e-5)
    assert axes[3].get_lines()[1].get_ydata()[0] == pytest.approx(math.log10(alpha_bar / (1 - alpha_bar)), rel=1e-4)


def test_draw_forward_state_redraws_cleanly_on_the_same_axes():
    schedule = NoiseSchedule.linear(num_steps=100)
    x0, eps = random_images((2, 1, 8, 8)), torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, 4)
    explorer.draw_forward_state(axes, x0, eps, 10, schedule)
    counts = [len(ax.get_children()) for ax in axes]
    explorer.draw_forward_state(axes, x0, eps, 90, schedule)
    assert [len(ax.get_children()) for ax in axes] == counts  # nothing left over from t = 10
    assert len(axes[0].images) == 1
    assert [line.get_xdata()[0] for line in axes[2].get_lines()[1:]] == [90, 90]  # the marker and its guide


def test_forward_explorer_redraws_when_t_or_the_schedule_changes():
    schedules = {"linear": NoiseSchedule.linear(num_steps=100), "cosine": NoiseSchedule.cosine(num_steps=30)}
    widget = explorer.forward_explorer(random_images((4, 3, 8, 8)), schedules, seed=0)
    slider, dropdown = widget.children[0].children
    picture = widget.children[1]
    first = picture.value
    assert Image.open(io.BytesIO(first)).format == "PNG"
    assert slider.max == 99

    slider.value = 80
    assert picture.value != first
    moved = picture.value

    dropdown.value = "cosine"
    assert slider.max == 29 and slider.value == 29
    assert picture.value != moved


def test_forward_explorer_uses_the_same_noise_for_the_same_seed():
    x0 = random_images((2, 1, 8, 8))
    schedule = NoiseSchedule.linear(num_steps=50)
    a, b, c = (explorer.forward_explorer(x0, schedule, seed=s) for s in (3, 3, 4))
    assert len(a.children[0].children) == 1  # one schedule: no dropdown
    assert a.children[1].value == b.children[1].value
    a.children[0].children[0].value = c.children[0].children[0].value = 25
    assert a.children[1].value != c.children[1].value


@pytest.mark.parametrize(
    "call",
    [
        lambda: viz.to_pil(torch.zeros(3, 8, 8)),
        lambda: viz.to_pil(torch.zeros(2, 4, 8, 8)),
        lambda: viz.save_gif(torch.zeros(2, 3, 8, 8), "unused.gif"),
        lambda: viz.plot_chain(torch.zeros(3, 2, 2, 8, 8), [-1, 0, 1]),
        lambda: viz.animation_html(torch.zeros(3, 2, 5, 8, 8)),
    ],
)
def test_wrong_layouts_name_the_shape_seen(call):
    with pytest.raises(ValueError, match=r"shape .*C = 1 or 3.*got \("):
        call()


def test_mismatched_lengths_and_bad_settings_are_explained():
    frames = torch.zeros(3, 2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"3 frames but 2 steps"):
        viz.plot_chain(frames, [-1, 0])
    with pytest.raises(ValueError, match=r"3 frames but 1 labels"):
        viz.animation_html(frames, labels=["x0"])
    with pytest.raises(ValueError, match=r"fps must lie in \(0, 50\], got 100"):
        viz.save_gif(frames, "unused.gif", fps=100)
    with pytest.raises(ValueError, match=r"scale must be a positive int, got 0"):
        viz.to_pil(frames[0], scale=0)
    with pytest.raises(ValueError, match=r"non-empty dict"):
        viz.plot_schedules({})
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\]"):
        fig, axes = plt.subplots(1, 4)
        explorer.draw_forward_state(axes, frames[0], torch.zeros_like(frames[0]), 10,
                                    NoiseSchedule.linear(num_steps=10))


@pytest.mark.parametrize("shape, nrow", [((5, 3, 4, 6), 2), ((8, 1, 5, 5), 8), ((3, 3, 2, 2), 8), ((1, 3, 4, 4), 4)])
def test_tile_lays_images_out_as_torchvision_make_grid(shape, nrow):
    from torchvision.utils import make_grid

    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(viz.tile(images, nrow=nrow, padding=2, pad_value=0.5),
                       make_grid(images, nrow=nrow, padding=2, pad_value=0.5))
