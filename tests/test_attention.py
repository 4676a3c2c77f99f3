"""Self- and cross-attention and the SpatialTransformer: against a naive softmax(QK^T / sqrt(d)) V, masks,
shapes, the identity at initialisation, attention maps for the lesson, and clear errors."""

import math

import pytest
import torch

from tinyldm.attention import CrossAttention, SelfAttention, SpatialTransformer, attention_weights, record_attention


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _naive(attn, x, context, mask):
    """Cross-attention written out head by head with an explicit loop: softmax(Q K^T / sqrt(d)) V."""
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)  # (B, N, h*d), (B, L, h*d)
    d = attn.head_dim
    heads = []
    for h in range(attn.num_heads):
        qh, kh, vh = (a[..., h * d:(h + 1) * d] for a in (q, k, v))
        scores = qh @ kh.transpose(1, 2) / math.sqrt(d)  # (B, N, L)
        scores = scores.masked_fill(~mask[:, None, :], -1e9)
        heads.append(scores.softmax(-1) @ vh)
    return attn.to_out(torch.cat(heads, dim=-1))


def _mask():
    # prompt 0 has 5 real tokens, prompt 1 has 2 (then padding)
    return torch.tensor([[True] * 5, [True, True, False, False, False]])


@pytest.mark.parametrize("head_dim", [None, 3])
def test_cross_attention_matches_the_naive_formula_with_padding(head_dim):
    torch.manual_seed(0)
    attn = CrossAttention(8, context_dim=6, num_heads=2, head_dim=head_dim)
    x, context, mask = _randn(2, 7, 8), _randn(2, 5, 6, seed=1), _mask()
    expected = _naive(attn, x, context, mask)
    torch.testing.assert_close(attn(x, context, mask), expected, atol=1e-5, rtol=1e-4)
    out, weights = attn(x, context, mask, return_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert weights.shape == (2, 2, 7, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 7))
    assert weights[1, :, :, 2:].abs().max() == 0  # padding gets no attention


def test_padding_tokens_do_not_change_the_output():
    torch.manual_seed(0)
    attn = CrossAttention(8, context_dim=6, num_heads=2)
    x, context = _randn(1, 4, 8), _randn(1, 2, 6, seed=1)
    padded = torch.cat([context, 100 * _randn(1, 3, 6, seed=2)], dim=1)  # garbage where the padding is
    mask = torch.tensor([[True, True, False, False, False]])
    torch.testing.assert_close(attn(x, padded, mask), attn(x, context), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(attn(x, padded), attn(x, context), atol=1e-3)  # without the mask it would


def test_a_fully_masked_context_contributes_nothing_and_gives_no_nan():
    torch.manual_seed(0)
    attn = CrossAttention(8, context_dim=6, num_heads=2)
    x, context = _randn(2, 3, 8), _randn(2, 4, 6, seed=1)
    mask = torch.tensor([[False] * 4, [True, False, True, False]])
    out = attn(x, context, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], attn.to_out.bias.expand(3, 8))  # attention adds zeros before to_out
    out_w, weights = attn(x, context, mask, return_weights=True)
    torch.testing.assert_close(out_w, out, atol=1e-5, rtol=1e-4)
    assert weights[0].abs().max() == 0 and torch.isfinite(weights).all()
    torch.testing.assert_close(out[1:], attn(x[1:], context[1:], mask[1:]))  # the other prompt is unaffected


def test_attention_weights_is_the_softmax_of_scaled_scores():
    q, k = _randn(1, 1, 2, 4), _randn(1, 1, 3, 4, seed=1)
    expected = torch.softmax(q[0, 0] @ k[0, 0].T / 2.0, dim=-1)  # sqrt(d_head) = sqrt(4)
    torch.testing.assert_close(attention_weights(q, k)[0, 0], expected)


def test_self_attention_mode_attends_to_x_itself():
    torch.manual_seed(0)
    attn = CrossAttention(8, num_heads=4)
    x = _randn(2, 6, 8)
    expected = _naive(attn, x, x, torch.ones(2, 6, dtype=torch.bool))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("context_dim, args, message", [
    (6, (_randn(2, 7, 5), _randn(2, 5, 6)), r"x must have shape \(B, N, 8\)"),
    (6, (_randn(2, 7, 8),), r"built with context_dim=6: pass context \(B, L, 6\)"),
    (6, (_randn(2, 7, 8), _randn(2, 5, 4)), r"context must have shape \(2, L, 6\)"),
    (6, (_randn(2, 7, 8), _randn(3, 5, 6)), r"context must have shape \(2, L, 6\)"),
    (6, (_randn(2, 7, 8), _randn(2, 5, 6), torch.ones(2, 5)), r"mask must be a bool tensor of shape \(2, 5\)"),
    (6, (_randn(2, 7, 8), _randn(2, 5, 6), torch.ones(2, 4, dtype=torch.bool)), r"mask must be a bool tensor"),
    (6, (_randn(2, 7, 8), [[0.0] * 6] * 5), r"context must have shape \(2, L, 6\), got list"),
    (6, (_randn(2, 7, 8), _randn(2, 5, 6), [[True] * 5] * 2), r"mask must be a bool tensor .* got list"),
    (None, (_randn(2, 7, 8), _randn(2, 5, 8)), "self-attention .* takes no context"),
])
def test_bad_attention_inputs_are_refused(context_dim, args, message):
    with pytest.raises(ValueError, match=message):
        CrossAttention(8, context_dim=context_dim, num_heads=2)(*args)


def test_bad_widths_are_refused():
    with pytest.raises(ValueError, match="query_dim=10 is not divisible by num_heads=4"):
        CrossAttention(10, 6, num_heads=4)
    with pytest.raises(ValueError, match="attention width 10 is not divisible by num_heads=4"):
        SpatialTransformer(10, 6, num_heads=4)


def _spatial(seed=0):
    torch.manual_seed(seed)
    block = SpatialTransformer(8, context_dim=6, num_heads=2, groups=4)
    torch.nn.init.normal_(block.proj_out.weight)  # proj_out starts at zero, which would hide everything
    return block


@pytest.mark.parametrize("size", [(4, 4), (2, 6)])
def test_spatial_transformer_keeps_the_shape_and_starts_as_the_identity(size):
    torch.manual_seed(0)
    block = SpatialTransformer(8, context_dim=6, num_heads=2, groups=4)
    x, context = _randn(2, 8, *size), _randn(2, 5, 6, seed=1)
    torch.testing.assert_close(block(x, context, _mask()), x)
    assert _spatial()(x, context, _mask()).shape == (2, 8, *size)


def test_spatial_transformer_listens_to_the_context_and_honours_the_mask():
    block = _spatial()
    x, context = _randn(1, 8, 4, 4), _randn(1, 3, 6, seed=1)
    assert not torch.allclose(block(x, context), block(x, _randn(1, 3, 6, seed=2)))
    padded = torch.cat([context, _randn(1, 2, 6, seed=3)], dim=1)
    mask = torch.tensor([[True, True, True, False, False]])
    torch.testing.assert_close(block(x, padded, mask), block(x, context), atol=1e-5, rtol=1e-4)


def test_record_attention_keeps_one_map_per_call_and_stops_after():
    model = torch.nn.Sequential()
    model.add_module("blocks", torch.nn.ModuleList([_spatial(0), _spatial(1)]))
    x, context = _randn(2, 8, 4, 2), _randn(2, 5, 6, seed=1)
    with record_attention(model) as maps:
        for _ in range(2):
            out = model.blocks[0](x, context, _mask())
    assert set(maps) == {"blocks.0", "blocks.1"} and len(maps["blocks.0"]) == 2 and maps["blocks.1"] == []
    weights = maps["blocks.0"][0]
    assert weights.shape == (2, 2, 5, 4, 2)  # (B, heads, L, H, W)
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(2, 2, 4, 2))  # each pixel's weights over tokens
    assert weights[1, :, 2:].abs().max() == 0  # nobody listens to padding
    torch.testing.assert_close(out, model.blocks[0](x, context, _mask()), atol=1e-5, rtol=1e-4)
    assert model.blocks[0].recorded is None


def test_record_attention_needs_cross_attention():
    with pytest.raises(ValueError, match="has no SpatialTransformer"):
        with record_attention(SelfAttention(8, num_heads=2, groups=4)):
            pass
