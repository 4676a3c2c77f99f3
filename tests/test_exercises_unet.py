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
    conv_flops,
    conv_output_size,
    receptive_field,
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
    for check in (check_conv_output_size, check_receptive_field, check_conv_flops):
        assert check(lambda *args: None) is None

    class Unfinished(ResBlock):
        def forward(self, x, temb):
            return None

    check_resblock(lambda c_in, c_out, temb_dim: Unfinished(c_in, c_out, temb_dim, groups=4,
                                                            time_conditioning="shift"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("[todo]") for line in lines)


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
