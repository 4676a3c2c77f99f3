"""The word-level tokenizer: ids, padding, truncation, saving, and agreement with transformers' tokenizer."""

import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tinyldm.text import caption_vocabulary, shapes_captions
from tinyldm.word_tokenizer import (
    SPECIAL_TOKENS,
    WordTokenizer,
    build_tokenizer,
    tokenizer_vocabulary,
    train_tokenizer,
)

CAPTION = "a large red circle at the top left"


def test_tokenizer_round_trip_through_save_and_load(tmp_path):
    tokenizer = train_tokenizer(shapes_captions())
    ids = tokenizer(CAPTION)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and len(ids) == 10
    assert tokenizer.decode(ids, skip_special_tokens=True) == CAPTION
    tokenizer.save_pretrained(tmp_path)
    mine = WordTokenizer.from_pretrained(tmp_path)
    assert mine(CAPTION)["input_ids"] == ids and mine.model_max_length == 16
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # the folder is also a transformers tokenizer
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert loaded(CAPTION)["input_ids"] == ids and loaded.decode(ids, skip_special_tokens=True) == CAPTION
    assert loaded.pad_token == "[PAD]" and loaded.model_max_length == 16


def test_a_tokenizer_rebuilt_from_its_vocabulary_gives_the_same_ids():
    captions = ["a handwritten digit 7", "a handwritten digit 1", "a photo of a sneaker"]
    trained = train_tokenizer(captions)
    vocabulary = tokenizer_vocabulary(trained)
    assert vocabulary == caption_vocabulary(captions) and vocabulary[0] == "a"  # the most frequent word first
    assert [trained.convert_ids_to_tokens(i) for i in range(4)] == list(SPECIAL_TOKENS)
    rebuilt = build_tokenizer(vocabulary)
    for text in captions:
        assert rebuilt(text)["input_ids"] == trained(text)["input_ids"]


def test_it_tokenizes_as_the_transformers_wrapper_the_shipped_model_was_trained_with():
    """The shipped encoder learnt these ids through transformers' PreTrainedTokenizerFast: padding, truncation,
    the mask and unknown words must come out the same."""
    ours = train_tokenizer(shapes_captions(), max_length=9)
    theirs = PreTrainedTokenizerFast(tokenizer_object=ours.backend_tokenizer, model_max_length=9, pad_token="[PAD]",
                                     unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    texts = [*shapes_captions()[::37], "", "red", "a purple circle", "Red, Circle!"]
    for options in ({}, {"padding": True}, {"padding": True, "truncation": True},
                    {"padding": True, "truncation": True, "max_length": 5}):
        got, expected = ours(texts, **options), theirs(texts, **options)
        assert got["input_ids"] == expected["input_ids"] and got["attention_mask"] == expected["attention_mask"]
    got = ours(texts, padding=True, truncation=True, return_tensors="pt")
    expected = theirs(texts, padding=True, truncation=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert ours(CAPTION) == {key: theirs(CAPTION)[key] for key in ("input_ids", "attention_mask")}
    ids = ours(CAPTION)["input_ids"]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_tokens_to_ids("red") == theirs.convert_tokens_to_ids("red")
    assert ours.vocab_size == theirs.vocab_size and ours.get_vocab() == theirs.get_vocab()
    assert ours.words("Red, Circle!") == ["red", ",", "circle", "!"]


def test_bad_vocabularies_corpora_and_tensor_requests_are_refused():
    with pytest.raises(ValueError, match="repeats a word or contains a special token"):
        build_tokenizer(["red", "red"])
    with pytest.raises(ValueError, match="repeats a word or contains a special token"):
        build_tokenizer(["red", "[PAD]"])
    with pytest.raises(ValueError, match="captions must be a non-empty list of str"):
        train_tokenizer([])
    tokenizer = build_tokenizer(["red", "circle"])
    with pytest.raises(ValueError, match="pass padding=True"):
        tokenizer(["red", "red circle"], return_tensors="pt")
    with pytest.raises(ValueError, match="only 'pt' is supported"):
        tokenizer(["red"], return_tensors="np")
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        WordTokenizer.from_pretrained(".")


def test_the_small_encoder_does_not_import_transformers():
    code = ("import sys; from tinyldm.text import TinyTextEncoder; TinyTextEncoder().encode(['a red circle']); "
            "print('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
