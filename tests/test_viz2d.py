"""The 2-D pictures: they draw what they are given, reject malformed input, and the widget scrubs frames."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tinyldm.schedule import NoiseSchedule  # noqa: E402
from tinyldm.viz.plots2d import (
    plot_direction_field,
    plot_point_clouds,
    plot_points,
    reverse_animation,
    reverse_explorer,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _frames(k=4, b=30):
    return torch.randn(k, b, 2, generator=torch.Generator().manual_seed(0))


def test_plot_points_draws_the_points_and_the_reference():
    points, reference = torch.randn(10, 2), torch.randn(50, 2)
    ax = plot_points(points, title="x0", reference=reference, lim=2.0)
    assert [len(c.get_offsets()) for c in ax.collections] == [50, 10]
    assert ax.get_title() == "x0" and ax.get_xlim() == (-2.0, 2.0)


def test_plot_point_clouds_makes_one_panel_per_cloud():
    fig = plot_point_clouds({"a": torch.randn(5, 2), "b": torch.randn(5, 2), "c": torch.randn(5, 2)}, ncols=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["a", "b", "c"] and len(fig.axes) == 4  # the fourth panel is blank


def test_reverse_animation_is_inline_html_with_one_frame_per_state():
    frames = _frames()
    html = reverse_animation(frames, [99, 50, 10, -1], x0_preds=frames * 0.5, reference=torch.randn(20, 2))
    assert "<script" in html.data and html.data.count("data:image/jpeg;base64") == 4
    assert not plt.get_fignums()  # nothing left behind in pyplot


def test_reverse_explorer_scrubs_through_the_frames():
    widget = reverse_explorer(_frames(), [99, 50, 10, -1])
    slider, picture = widget.children
    assert [label for label, _ in slider.options] == ["99", "50", "10", "x0"]
    first = bytes(picture.value)
    assert first.startswith(b"\x89PNG")
    slider.value = 3
    assert bytes(picture.value) != first


def test_direction_field_draws_one_quiver_panel_per_step():
    schedule = NoiseSchedule.linear(100)
    fig = plot_direction_field(lambda xt, t: xt * 0.5, schedule, [5, 50], grid=5)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("t = ")]
    assert [ax.get_title().split()[2] for ax in panels] == ["5", "50"]
    quiver = next(c for c in panels[0].collections if isinstance(c, matplotlib.quiver.Quiver))
    assert quiver.N == 25
    # -eps_pred = -0.5 x: every arrow points towards the origin
    assert (quiver.U * quiver.X <= 1e-9).all() and (quiver.V * quiver.Y <= 1e-9).all()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"points must be a \(B, 2\) tensor of 2-D points, got \(3, 3\)"):
        plot_points(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="got 4 frames but 2 labels"):
        reverse_animation(_frames(), [1, -1])
    with pytest.raises(ValueError, match=r"frames must be a \(K, B, 2\) tensor"):
        reverse_explorer(torch.zeros(4, 2), [1, 2, 3, 4])
    with pytest.raises(ValueError, match="x0_preds must have the shape of frames"):
        reverse_animation(_frames(), [3, 2, 1, -1], x0_preds=torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="steps is empty"):
        plot_direction_field(lambda xt, t: xt, NoiseSchedule.linear(10), [])
