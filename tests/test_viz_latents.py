"""Lesson 5's latent pictures: channels laid out as a 2 x 2 mosaic, and the pipeline figure's eight panels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tinyldm.viz.latents import latent_mosaic, latent_pipeline_figure  # noqa: E402


def test_the_mosaic_puts_each_channel_in_its_quarter_with_gaps_between():
    z = torch.arange(4 * 2 * 3, dtype=torch.float32).reshape(4, 2, 3)
    grid = latent_mosaic(z)
    assert grid.shape == (5, 7)
    torch.testing.assert_close(grid[:2, :3], z[0])
    torch.testing.assert_close(grid[:2, 4:], z[1])
    torch.testing.assert_close(grid[3:, :3], z[2])
    torch.testing.assert_close(grid[3:, 4:], z[3])
    assert grid[2].isnan().all() and grid[:, 3].isnan().all()


def test_more_than_four_channels_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"up to 4 channels, got 8; pass z\[:4\]"):
        latent_mosaic(torch.zeros(8, 2, 2))


def test_the_pipeline_figure_names_its_sizes_and_steps():
    z = torch.zeros(4, 8, 8)
    image = torch.zeros(1, 3, 32, 32)
    fig = latent_pipeline_figure(image, z, z, z, 400, z, z, image, "a red circle", steps=25)
    titles = [ax.get_title() for ax in fig.axes]
    assert "image x\n3 x 32 x 32 = 3,072 numbers" in titles
    assert "latent z0 = E(x)\n4 x 8 x 8 = 256 numbers" in titles and "z0 after 25 DDIM steps" in titles
    assert any("UNet, 25 steps" == t.get_text() for t in fig.texts)
    plt.close(fig)
