"""Tokenizers and text encoders: the round trip, the Shapes vocabulary, prompt errors, shapes and masks, saving,
and the frozen pretrained encoder (only where TINYLDM_TEXT_ENCODER names a local copy)."""

import os

import pytest
import torch

from tinyldm.data.shapes import COLORS, HELD_OUT, POSITIONS, SHAPES, SIZES, parse_caption
from tinyldm.text import (
    TEXT_ENCODER_VAR,
    PretrainedTextEncoder,
    TextEncoderConfig,
    TinyTextEncoder,
    caption_vocabulary,
    check_prompts,
    shapes_captions,
)

CAPTION = "a large red circle at the top left"


def _encoder(seed=0, **change):
    torch.manual_seed(seed)
    return TinyTextEncoder(TextEncoderConfig(**{**vars(TextEncoderConfig.tiny()), **change}))


def test_shapes_captions_cover_the_grammar_including_held_out_pairs():
    captions = shapes_captions()
    assert len(captions) == len(SIZES) * len(COLORS) * len(SHAPES) * len(POSITIONS) == 432
    pairs = {(parse_caption(c)["color"], parse_caption(c)["shape"]) for c in captions}
    assert HELD_OUT <= pairs
    words = set(TextEncoderConfig().vocabulary)
    assert {*COLORS, *SHAPES, *SIZES, "a", "at", "on", "in", "the", "center", "top", "bottom"} <= words
    assert len(words) == 22


def test_the_tiny_encoder_gives_context_and_padding_mask():
    encoder = _encoder()
    prompts = [CAPTION, "a small blue square in the center"]
    context, mask = encoder.encode(prompts)
    assert context.shape == (2, 10, encoder.context_dim) and encoder.context_dim == 32
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [10, 9]
    alone, _ = encoder.encode(prompts[1:])  # batching with a longer prompt only adds masked padding
    torch.testing.assert_close(context[1, :9], alone[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(context[0, 1], context[1, 1])  # different words, different vectors


def test_the_tiny_encoder_trains():
    encoder = _encoder()
    context, _ = encoder.encode([CAPTION])
    context.square().mean().backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and encoder.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_null_caption_is_only_special_tokens():
    encoder = _encoder()
    context, mask = encoder.encode_null(3)
    assert context.shape == (3, 2, 32) and mask.all()
    torch.testing.assert_close(encoder.encode([""], allow_empty=True)[0], context[:1])


@pytest.mark.parametrize("prompts, error, message", [
    ([""], ValueError, r"prompt 0 is empty .* reserved for the unconditional half"),
    ([CAPTION, "   "], ValueError, "prompt 1 is empty"),
    ([], ValueError, "no prompts given"),
    (CAPTION, TypeError, "prompts must be a list of str"),
    ([CAPTION, 3], TypeError, "prompt 1 must be a str"),
    (["a pink dog at the top"], ValueError, r"prompt 0 .* never saw: \['pink', 'dog'\]\. It knows 22 words"),
    (["a red circle."], ValueError, r"never saw: \['\.'\]"),
    ([" ".join(["a red circle"] * 5)], ValueError, "prompt 0 .* has more than 16 tokens"),
])
def test_bad_prompts_are_refused(prompts, error, message):
    with pytest.raises(error, match=message):
        _encoder().encode(prompts)


def test_max_length_counts_special_tokens():
    encoder = _encoder(max_length=6)
    context, _ = encoder.encode(["A Red Circle at"])  # 4 words + [CLS] + [SEP] = 6; case is ignored
    assert context.shape[1] == 6
    torch.testing.assert_close(context, encoder.encode(["a red circle at"])[0])
    with pytest.raises(ValueError, match="has more than 6 tokens"):
        encoder.encode(["a red circle at the"])


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 30, "num_heads": 4}, "hidden_size=30 is not divisible by num_heads=4"),
    ({"max_length": 2}, "max_length=2 leaves no room"),
    ({"num_layers": 0}, "num_layers must be a positive int"),
    ({"vocabulary": ()}, "vocabulary must be a non-empty tuple"),
    ({"dropout": 1.5}, r"dropout must lie in \[0, 1\)"),
])
def test_bad_encoder_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        _encoder(**change)


def test_prompts_come_back_as_a_list():
    assert check_prompts(("a", "b")) == ["a", "b"]


def test_the_tiny_encoder_saves_tokenizer_config_and_weights_in_one_folder(tmp_path):
    captions = ["a handwritten digit 7", "a handwritten digit 1"]
    encoder = _encoder(vocabulary=caption_vocabulary(captions))
    for p in encoder.parameters():
        p.data.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    encoder.save_pretrained(tmp_path)
    loaded = TinyTextEncoder.from_pretrained(tmp_path)
    assert loaded.config == encoder.config and loaded.config.vocabulary == ("a", "digit", "handwritten", "1", "7")
    torch.testing.assert_close(loaded.encode(captions)[0], encoder.eval().encode(captions)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="never saw"):
        loaded.encode(["a red circle"])


@pytest.fixture(scope="module")
def minilm():
    path = os.environ.get(TEXT_ENCODER_VAR)
    if not path:
        pytest.skip(f"{TEXT_ENCODER_VAR} is not set: point it at a local all-MiniLM-L6-v2 folder to test the "
                    "pretrained encoder offline")
    return PretrainedTextEncoder(path, max_length=16)


def test_the_pretrained_encoder_is_frozen_and_shares_the_interface(minilm):
    context, mask = minilm.encode([CAPTION, "a dog"])
    assert context.shape == (2, 10, 384) and minilm.context_dim == 384
    assert mask.sum(1).tolist() == [10, 4] and not context.requires_grad
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.training and not minilm.model.training  # frozen: dropout stays off
    null, null_mask = minilm.encode_null(2)
    assert null.shape == (2, 2, 384) and null_mask.all()
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        minilm.encode([""])
    with pytest.raises(ValueError, match="has more than 16 tokens"):
        minilm.encode([" ".join(["a red circle"] * 5)])


def test_the_pretrained_encoder_reads_the_environment_variable(minilm, monkeypatch):
    monkeypatch.setenv(TEXT_ENCODER_VAR, minilm.name)
    assert PretrainedTextEncoder().max_length == 512
    with pytest.raises(ValueError, match=r"max_length must be an int in \[3, 512\]"):
        PretrainedTextEncoder(minilm.name, max_length=1000)


def test_a_missing_pretrained_encoder_names_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv(TEXT_ENCODER_VAR, str(tmp_path / "missing"))
    with pytest.raises(OSError, match=rf"from \${TEXT_ENCODER_VAR}.*Offline, pass the folder .* or set "
                                      rf"{TEXT_ENCODER_VAR}.*online"):
        PretrainedTextEncoder()
