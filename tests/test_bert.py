"""The small BERT in plain PyTorch against transformers' BertModel: the same parameter names, the same outputs."""

import pytest
import torch

from tinyldm.bert import BertEncoder, BertSettings
from tinyldm.runtime import seeded

transformers = pytest.importorskip("transformers")

SETTINGS = BertSettings(vocab_size=30, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                        max_length=12)


def _reference() -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=12, type_vocab_size=1,
                                     pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with seeded(0):
        return transformers.BertModel(config, add_pooling_layer=False).eval()


def test_bert_has_the_parameter_names_and_outputs_of_transformers_bert():
    reference = _reference()
    ours = BertEncoder(SETTINGS).eval()
    assert set(ours.state_dict()) == set(reference.state_dict())
    ours.load_state_dict(reference.state_dict())  # a transformers checkpoint loads unchanged
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 30, (3, 7), generator=generator)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:], mask[2, 2:] = 0, 0  # padded captions
    ids = ids * mask
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask), expected, rtol=1e-5, atol=1e-5)


def test_heads_that_do_not_divide_the_width_are_refused():
    with pytest.raises(ValueError, match="hidden_size 32 is not divisible by num_heads 5"):
        BertEncoder(BertSettings(vocab_size=30, hidden_size=32, num_layers=1, num_heads=5, intermediate_size=64,
                                 max_length=12))
