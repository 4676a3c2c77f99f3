"""The sinusoidal timestep embedding against a plain-Python reference, and the TimeEmbedding module."""

import math

import pytest
import torch

from tinyldm.time_embedding import TimeEmbedding, timestep_embedding


def _reference(step: float, dim: int, max_period: float = 10000.0) -> list[float]:
    """Cosines then sines at frequencies max_period^(-k / half), written out one number at a time."""
    half = dim // 2
    freqs = [max_period ** (-k / half) for k in range(half)]
    values = [math.cos(step * f) for f in freqs] + [math.sin(step * f) for f in freqs]
    return values + [0.0] * (dim % 2)


@pytest.mark.parametrize("dim", [2, 7, 32, 128])
def test_embedding_matches_the_reference(dim):
    t = torch.tensor([0, 1, 17, 500, 999])
    emb = timestep_embedding(t, dim)
    assert emb.shape == (5, dim) and emb.dtype == torch.float32
    expected = torch.tensor([_reference(step, dim) for step in t.tolist()])
    torch.testing.assert_close(emb, expected, atol=2e-4, rtol=1e-4)


def test_step_zero_is_ones_then_zeros_and_odd_widths_are_zero_padded():
    emb = timestep_embedding(torch.tensor([0]), 9)
    assert emb[0, :4].tolist() == [1.0] * 4 and emb[0, 4:].tolist() == [0.0] * 5


def test_float_steps_and_max_period():
    t = torch.tensor([2.5])
    torch.testing.assert_close(timestep_embedding(t, 8, max_period=100.0), torch.tensor([_reference(2.5, 8, 100.0)]))


def test_every_step_of_a_long_chain_gets_a_distinct_embedding():
    emb = timestep_embedding(torch.arange(1000), 32)
    distances = torch.cdist(emb, emb) + torch.eye(1000) * 1e3
    assert distances.min() > 1e-3
    # each row is a point on a product of circles: squared norm = half
    torch.testing.assert_close(emb.pow(2).sum(1), torch.full((1000,), 16.0))


def test_time_embedding_module_shapes_and_gradients():
    module = TimeEmbedding(16)
    out = module(torch.tensor([0, 5, 999]))
    assert out.shape == (3, 64)
    assert TimeEmbedding(16, out_dim=24)(torch.tensor([1])).shape == (1, 24)
    out.sum().backward()
    assert all(p.grad is not None for p in module.parameters())
    assert sum(p.numel() for p in module.parameters()) == 16 * 64 + 64 + 64 * 64 + 64


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"t must be a 1-D tensor of step indices \(B,\), got \(2, 1\)"):
        timestep_embedding(torch.zeros(2, 1), 8)
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        timestep_embedding(torch.zeros(2), 1)
    with pytest.raises(ValueError, match="max_period must be > 1"):
        timestep_embedding(torch.zeros(2), 8, max_period=1.0)
