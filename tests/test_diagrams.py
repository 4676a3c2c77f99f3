"""The block diagrams are drawn from the config they are given: levels, widths, blocks and attention places."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from tinyldm.unet import UNetConfig  # noqa: E402
from tinyldm.viz.diagrams import cross_attention_diagram, unet_diagram  # noqa: E402


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_the_unet_diagram_shows_each_level_of_its_config():
    config = UNetConfig(base_channels=16, channel_mults=(1, 2, 4, 4), blocks_per_level=2, attention_levels=(1,))
    fig = unet_diagram(config, image_size=64)
    texts = _texts(fig)
    for level, (side, width) in enumerate(((64, 16), (32, 32), (16, 64), (8, 64))):
        boxes = [t for t in texts if t.startswith(f"level {level}: {side}x{side}, {width} ch")]
        assert len(boxes) == 2  # one on the way down, one on the way up
        assert [("+ self-attention" in t) for t in boxes] == [level == 1] * 2
        assert {t.split("\n")[1] for t in boxes} == {"2 x ResBlock", "3 x ResBlock"}
    assert any(t.startswith("middle: 8x8, 64 ch") for t in texts)
    assert sum(t == "skip: concatenate" for t in texts) == 4
    plt.close(fig)


def test_without_skips_or_with_a_caption_the_diagram_says_so():
    texts = _texts(unet_diagram(UNetConfig.tiny(context_dim=32).__class__(
        **{**UNetConfig.tiny(context_dim=32).__dict__, "skip_connections": False})))
    assert "skip: concatenate" not in texts
    assert any("SpatialTransformer" in t for t in texts) and any("caption" in t for t in texts)
    plt.close("all")


def test_the_cross_attention_diagram_names_q_k_v_and_the_softmax():
    texts = " ".join(_texts(cross_attention_diagram()))
    for part in ("W_Q", "W_K", "W_V", "softmax", "padding", "N \\times L"):
        assert part in texts
    plt.close("all")
