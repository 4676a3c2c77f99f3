"""Checkers for lesson 3, the UNet: output sizes, receptive fields, a ResBlock, the cost of a convolution, and an
experiment: a network whose every output pixel sees the whole image, on a budget."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.unet_blocks import ResBlock

__all__ = ["conv_output_size", "receptive_field", "conv_flops", "check_conv_output_size", "check_receptive_field",
           "check_resblock", "check_conv_flops", "whole_view", "check_whole_view"]


def _own_rng(check: Callable[..., None]) -> Callable[..., None]:
    """Run a checker with PyTorch's global RNG forked: building layers draws from it, and the student's
    notebook should not see its random numbers change because a checker ran."""

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)

    return wrapper


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Side of a convolution's output: floor((size + 2 * padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """How many input pixels (along one side) one output pixel of a stack of layers can see.

    Each layer is (kernel, stride). A layer adds (kernel - 1) times the product of the strides before it:
    r = 1 + sum_i (k_i - 1) * prod_{j < i} s_j (Araujo et al. 2019, Eq. 2).
    """
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def conv_flops(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int) -> int:
    """Floating-point operations of one 2-D convolution on one image, bias ignored: 2 per multiply-add."""
    return 2 * c_in * kernel * kernel * c_out * h_out * w_out


@_own_rng
def check_conv_output_size(fn: Callable[[int, int, int, int], int]) -> None:
    """Exercise: ``fn(size, kernel, stride, padding) -> int``, the side of a convolution's output."""
    name = "conv_output_size"
    for size, kernel, stride, padding in [(32, 3, 1, 1), (32, 3, 2, 1), (31, 3, 2, 1), (32, 2, 2, 0),
                                          (8, 5, 1, 0), (17, 4, 3, 2)]:
        got = attempt(fn, size, kernel, stride, padding)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        real = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding)(torch.zeros(1, 1, size, size)).shape[-1]
        if int(got) != real:
            raise AssertionError(
                f"{name}: a {kernel}x{kernel} convolution with stride {stride} and padding {padding} on a "
                f"{size}-pixel side gives {real} pixels, you returned {got}. Hint: the kernel fits "
                "(size + 2 * padding - kernel) // stride times after its first position"
            )
    return passed(name, "matches nn.Conv2d for six kernels, strides and paddings")


@_own_rng
def check_receptive_field(fn: Callable[[Sequence[tuple[int, int]]], int]) -> None:
    """Exercise: ``fn(layers) -> int``, the receptive field of a stack of (kernel, stride) layers."""
    name = "receptive_field"
    cases = [[(3, 1)], [(3, 1), (3, 1)], [(3, 1), (3, 2), (3, 1)], [(3, 2), (3, 2), (3, 2), (3, 1)],
             [(5, 1), (2, 2), (3, 1), (2, 2), (3, 1)]]
    for layers in cases:
        got = attempt(fn, layers)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        expected = receptive_field(layers)
        if int(got) != expected:
            raise AssertionError(
                f"{name}: layers {layers} (kernel, stride) see {expected} input pixels, you returned {got}. Hint: "
                "each layer widens the field by (kernel - 1) times the product of the strides of the layers "
                "*before* it, because its neighbouring pixels are that far apart in the input"
            )
    return passed(name, "right for plain, strided and mixed stacks")


@_own_rng
def check_resblock(block_class: type) -> None:
    """Exercise: the DDPM ResBlock, where the step is added as a per-channel shift before the second norm.

    ``block_class(in_channels, out_channels, temb_dim)`` must build the layers of
    ``tinyldm.unet_blocks.ResBlock(..., groups=4, time_conditioning="shift")`` under the same names; its forward
    must match the package's for the same weights.
    """
    name = "ResBlock"
    generator = torch.Generator().manual_seed(0)
    for c_in, c_out in [(8, 8), (8, 16)]:
        reference = ResBlock(c_in, c_out, temb_dim=12, groups=4, time_conditioning="shift")
        for p in reference.parameters():  # random weights everywhere, the zeroed conv2 included
            p.data = torch.randn(p.shape, generator=generator) * 0.2
        try:
            mine = block_class(c_in, c_out, 12)
        except NotImplementedError:
            return not_attempted(name)
        try:
            mine.load_state_dict(reference.state_dict())
        except RuntimeError as err:
            raise AssertionError(f"{name}: the layers do not match tinyldm's ResBlock ({err}). Hint: keep the "
                                 "names and shapes of __init__ as given") from None
        x = torch.randn(3, c_in, 8, 8, generator=generator)
        temb = torch.randn(3, 12, generator=generator)
        got = attempt(mine.eval(), x, temb)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        expect_close(
            name, got, reference.eval()(x, temb),
            hint="h = conv1(SiLU(norm1(x))); add time_proj(SiLU(temb)) reshaped to (B, C, 1, 1) to h; then "
            "h = conv2(dropout(SiLU(norm2(h)))); return skip(x) + h",
        )
    return passed(name, "matches tinyldm.unet_blocks.ResBlock (shift conditioning), with and without a change "
                  "of width")


@_own_rng
def check_conv_flops(fn: Callable[[int, int, int, int, int], int]) -> None:
    """Exercise: ``fn(c_in, c_out, kernel, h_out, w_out) -> int``, FLOPs of one convolution on one image."""
    name = "conv_flops"
    for c_in, c_out, kernel, size, stride in [(3, 32, 3, 32, 1), (32, 64, 3, 32, 2), (64, 64, 1, 8, 1)]:
        got = attempt(fn, c_in, c_out, kernel, size // stride, size // stride)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        with FlopCounterMode(display=False) as counter:
            conv(torch.zeros(1, c_in, size, size))
        measured = counter.get_total_flops()
        if int(got) != measured:
            raise AssertionError(
                f"{name}: a {kernel}x{kernel} convolution from {c_in} to {c_out} channels with a "
                f"{size // stride}x{size // stride} output costs {measured:,} FLOPs (PyTorch's counter), you "
                f"returned {got:,}. Hint: every output value (c_out * h_out * w_out of them) is a sum of "
                "c_in * kernel * kernel products, and a multiply-add counts as 2 FLOPs"
            )
    return passed(name, "matches torch.utils.flop_counter on three convolutions")


WHOLE_VIEW_SIZE = 32  # the side of the image the experiment's network maps to an image of the same size
WHOLE_VIEW_BUDGET = 4  # the cost allowed, in convolutions at full resolution (output pixels / 32 ** 2)
# Operations that move information between pixels, and whether the experiment allows them.
_ALLOWED_MIXING = {"convolution", "upsample_nearest2d"}
_ALLOWED_POINTWISE = {"silu", "relu", "gelu", "leaky_relu", "sigmoid", "tanh", "add", "sub", "mul", "div", "cat",
                      "clone", "detach", "alias", "view", "_unsafe_view", "expand", "_to_copy", "empty_like", "neg"}


class _PixelMixingLedger(TorchDispatchMode):
    """Records every convolution's output pixels and refuses operations that mix pixels other than 3x3
    convolutions (stride 1 or 2, no dilation) and nearest up-sampling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_pixels = 0
        self.refused: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        op = func._schema.name.split("::")[-1].rstrip("_")
        if op == "convolution":
            weight, stride, dilation = args[1], tuple(args[3]), tuple(args[5])
            if tuple(weight.shape[-2:]) != (3, 3) or not set(stride) <= {1, 2} or set(dilation) != {1}:
                self.refused.append(f"a {tuple(weight.shape[-2:])} convolution with stride {stride} and dilation "
                                    f"{dilation}")
            self.conv_pixels += out.shape[-2] * out.shape[-1]
        elif op not in _ALLOWED_MIXING and op not in _ALLOWED_POINTWISE:
            self.refused.append(f"aten.{op}")
        return out


def whole_view(net: nn.Module, size: int = WHOLE_VIEW_SIZE, probes: int = 3) -> tuple[Tensor, float]:
    """Which input pixels each corner and the centre of ``net``'s output depend on, and what ``net`` costs.

    Returns ``(seen, cost)``: ``seen`` is a (5, size, size) bool map per probed output pixel (the four corners, then
    the centre), true where the gradient of that output pixel with respect to the input is non-zero for any of
    ``probes`` random inputs; ``cost`` is the output pixels of all convolutions over ``size ** 2``, the number of
    full-resolution 3x3 convolutions the network is worth (widths aside)."""
    generator = torch.Generator().manual_seed(0)
    ledger = _PixelMixingLedger()
    x = torch.randn(1, 3, size, size, generator=generator)
    with torch.no_grad(), ledger:
        out = net(x)
    if ledger.refused:
        raise AssertionError(f"whole_view: the network uses {ledger.refused[0]}, which this experiment does not allow. "
                             "Hint: mix pixels only with 3x3 convolutions (stride 1 or 2) and nearest up-sampling "
                             "(F.interpolate(h, scale_factor=2) or nn.Upsample(scale_factor=2)); activations, "
                             "sums and torch.cat are fine")
    if tuple(out.shape) != (1, 3, size, size):
        raise AssertionError(f"whole_view: a (1, 3, {size}, {size}) image came out as {tuple(out.shape)}. Hint: "
                             "like a UNet, the network must return an image of the input's size")
    probe_points = [(0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1), (size // 2, size // 2)]
    seen = torch.zeros(len(probe_points), size, size, dtype=torch.bool)
    for _ in range(probes):
        x = torch.randn(1, 3, size, size, generator=generator, requires_grad=True)
        out = net(x)
        for k, (i, j) in enumerate(probe_points):
            (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=k < len(probe_points) - 1)
            seen[k] |= grad[0].abs().sum(0) > 0
    return seen, ledger.conv_pixels / size ** 2


@_own_rng
def check_whole_view(fn: Callable[[], nn.Module]) -> None:
    """Experiment: ``fn() -> nn.Module``, a network from a (1, 3, 32, 32) image to one of the same size in which
    every output pixel depends on every input pixel, at a cost of at most WHOLE_VIEW_BUDGET full-resolution
    convolutions. Only 3x3 convolutions and nearest up-sampling may mix pixels."""
    name = "whole_view"
    net = attempt(fn)
    if net is NOT_ATTEMPTED:
        return not_attempted(name)
    if not isinstance(net, nn.Module):
        raise AssertionError(f"{name}: return an nn.Module, got {type(net).__name__}")
    seen, cost = whole_view(net.eval())
    blind = [where for where, s in zip(("top left", "top right", "bottom left", "bottom right", "centre"), seen)
             if not s.all()]
    if blind:
        worst = int(seen.sum((1, 2)).min())
        raise AssertionError(f"{name}: the output pixel at the {blind[0]} sees {worst} of the "
                             f"{WHOLE_VIEW_SIZE ** 2} input pixels, not all. Hint: every halving doubles how far "
                             "one more 3x3 convolution reaches")
    if cost > WHOLE_VIEW_BUDGET:
        raise AssertionError(f"{name}: every output pixel sees the whole image, but the convolutions cost {cost:.2f} "
                             f"full-resolution convolutions, more than {WHOLE_VIEW_BUDGET}. Hint: a convolution on a "
                             "16x16 map costs a quarter of one on 32x32")
    return passed(name, f"every probed output pixel sees all {WHOLE_VIEW_SIZE} x {WHOLE_VIEW_SIZE} input pixels, "
                        f"for {cost:.2f} full-resolution convolutions (budget {WHOLE_VIEW_BUDGET})")
