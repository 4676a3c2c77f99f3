"""Lesson 3's checkers accept the answers, reject wrong ones with a hint, and report unfinished ones."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyldm.exercises.unet import (
    check_conv_flops,
    check_conv_output_size,
    check_receptive_field,
    check_resblock,
    check_whole_view,
    conv_flops,
    conv_output_size,
    receptive_field,
    whole_view,
)
from tinyldm.unet_blocks import ResBlock


def _shift_block(c_in, c_out, temb_dim):
    return ResBlock(c_in, c_out, temb_dim, groups=4, time_conditioning="shift")


def test_reference_answers_pass(capsys):
    check_conv_output_size(conv_output_size)
    check_receptive_field(receptive_field)
    check_conv_flops(conv_flops)
    check_resblock(_shift_block)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("[ok]") for line in lines)


def test_unfinished_answers_print_todo(capsys):
    for check in (check_conv_output_size, check_receptive_field, check_conv_flops, check_whole_view):
        assert check(lambda *args: None) is None

    class Unfinished(ResBlock):
        def forward(self, x, temb):
            return None

    check_resblock(lambda c_in, c_out, temb_dim: Unfinished(c_in, c_out, temb_dim, groups=4,
                                                            time_conditioning="shift"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.startswith("[todo]") for line in lines)


@pytest.mark.parametrize("check, wrong, hint", [
    (check_conv_output_size, lambda size, k, s, p: size // s, "kernel fits"),
    (check_receptive_field, lambda layers: 1 + sum(k - 1 for k, _ in layers), "product of the strides"),
    (check_conv_flops, lambda ci, co, k, h, w: ci * co * k * k * h * w, "counts as 2 FLOPs"),
])
def test_wrong_answers_get_a_hint(check, wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check(wrong)


def test_a_resblock_that_ignores_the_step_gets_a_hint():
    class NoTime(ResBlock):
        def forward(self, x, temb):
            h = self.conv1(F.silu(self.norm1(x)))
            return self.skip(x) + self.conv2(F.silu(self.norm2(h)))

    with pytest.raises(AssertionError, match=r"add time_proj\(SiLU\(temb\)\)"):
        check_resblock(lambda c_in, c_out, temb_dim: NoTime(c_in, c_out, temb_dim, groups=4,
                                                            time_conditioning="shift"))


def test_a_resblock_with_other_layers_is_told_to_keep_them():
    class Renamed(nn.Module):
        def __init__(self, c_in, c_out, temb_dim):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    with pytest.raises(AssertionError, match="keep the names and shapes"):
        check_resblock(Renamed)


def test_checkers_leave_the_global_rng_alone():
    before = torch.get_rng_state()
    check_resblock(_shift_block)
    assert torch.equal(before, torch.get_rng_state())


class _Hourglass(nn.Module):
    """Halve ``levels`` times with 3x3 convolutions, resize back, and mix with the input in one full-size conv."""

    def __init__(self, levels: int, width: int = 8):
        super().__init__()
        self.down = nn.ModuleList(nn.Conv2d(3 if i == 0 else width, width, 3, stride=2, padding=1)
                                  for i in range(levels))
        self.out = nn.Conv2d(width + 3, 3, 3, padding=1)

    def forward(self, x):
        h = x
        for conv in self.down:
            h = F.silu(conv(h))
        return self.out(torch.cat([F.interpolate(h, size=x.shape[-2:]), x], 1))


def test_whole_view_measures_what_each_output_pixel_sees_and_the_convolutions_cost():
    seen, cost = whole_view(_Hourglass(levels=5))
    assert seen.all() and cost == pytest.approx(1 + (256 + 64 + 16 + 4 + 1) / 1024)
    seen, _ = whole_view(_Hourglass(levels=3))  # 1 + 2 + 4 + 8 pixels of reach: the corners are short-sighted
    assert not seen[0].all() and seen[0, :8, :8].all() and not seen[0, -1, -1]
    plain, _ = whole_view(nn.Conv2d(3, 3, 3, padding=1))
    assert plain[4].sum() == 9 and plain[0].sum() == 4  # the centre sees 3x3; a corner 2x2 inside the image


def test_whole_view_passes_an_hourglass_and_refuses_the_short_sighted_the_costly_and_global_shortcuts(capsys):
    check_whole_view(lambda: _Hourglass(levels=5))
    assert capsys.readouterr().out.startswith("[ok] whole_view")
    with pytest.raises(AssertionError, match="top left sees 64 of the 1024"):
        check_whole_view(lambda: _Hourglass(levels=3))
    layers = [nn.Conv2d(3, 3, 3, padding=1) for _ in range(31)]
    with pytest.raises(AssertionError, match="cost 31.00 full-resolution convolutions"):
        check_whole_view(lambda: nn.Sequential(*layers))

    class GlobalMean(nn.Module):
        def forward(self, x):
            return x + x.mean((2, 3), keepdim=True)

    with pytest.raises(AssertionError, match="aten.mean"):
        check_whole_view(GlobalMean)
    with pytest.raises(AssertionError, match=r"\(5, 5\) convolution"):
        check_whole_view(lambda: nn.Conv2d(3, 3, 5, padding=2))
    with pytest.raises(AssertionError, match=r"came out as \(1, 3, 16, 16\)"):
        check_whole_view(lambda: nn.Conv2d(3, 3, 3, stride=2, padding=1))
