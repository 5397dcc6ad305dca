"""Size measures count what a model really stores; latency is measured without touching the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from transformers import BertConfig, BertForSequenceClassification

from fairfront.objectives.measures.size import (
    measure_latency,
    nonzero_parameters,
    parameter_count,
    sparse_tensor_bytes,
    storage_bytes,
)

VOCAB, HIDDEN, MAX_POS, TYPES = 100, 64, 64, 2


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=MAX_POS, type_vocab_size=TYPES,
                        num_labels=3)
    return BertForSequenceClassification(config).eval()


class TwoLinears(nn.Module):
    """A 5->4 layer with a hand-made sparse weight and a dense bias, plus a 4->2 layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 4)
        self.b = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.a.weight.zero_()
            self.a.weight[0, 1] = 1.0
            self.a.weight[2, 0] = -2.0
            self.a.weight[3, 4] = 0.5
            self.a.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
            self.b.weight.fill_(0.25)


def test_parameter_count_with_and_without_embeddings():
    model = tiny_model()
    total = sum(p.numel() for p in model.parameters())
    embeddings = (VOCAB + MAX_POS + TYPES) * HIDDEN
    assert parameter_count(model) == total
    assert parameter_count(model, include_embeddings=False) == total - embeddings


def test_nonzero_counts_zeros_placed_by_hand():
    model = tiny_model()
    with torch.no_grad():  # BertConfig initialises biases to zero: make everything nonzero first
        for p in model.parameters():
            p.copy_(torch.where(p == 0, torch.full_like(p, 0.5), p))
        model.bert.encoder.layer[0].attention.self.query.weight[:10, :10] = 0.0  # 100 zeros
        model.bert.encoder.layer[1].output.dense.bias.zero_()  # 64 zeros
        model.bert.embeddings.word_embeddings.weight[:3] = 0.0  # 3 * 64 zeros, in an embedding
    total = parameter_count(model)
    assert nonzero_parameters(model) == total - 100 - HIDDEN - 3 * HIDDEN
    embeddings = (VOCAB + MAX_POS + TYPES) * HIDDEN
    assert nonzero_parameters(model, include_embeddings=False) == total - embeddings - 100 - HIDDEN


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_bytes_formula_by_hand():
    # 3 non-zeros in a 4x5 matrix: CSR = 4*3 values + 4*3 column indices + 4*(4+1) row pointers = 44 < 80
    w = TwoLinears().a.weight.detach()
    assert sparse_tensor_bytes(w) == 44
    csr = w.to_sparse_csr()  # torch's own CSR of it; its indices counted at int32 size
    assert 4 * csr.values().numel() + 4 * csr.col_indices().numel() + 4 * csr.crow_indices().numel() == 44
    assert sparse_tensor_bytes(torch.ones(4)) == 16  # dense 16 beats CSR 4*4 + 4*4 + 4*2
    assert sparse_tensor_bytes(torch.zeros(10, 10)) == 4 * 11  # only row pointers


def test_storage_bytes_by_hand():
    model = TwoLinears()
    stored = storage_bytes(model)
    assert stored["dense_fp32"] == 4 * (20 + 4 + 8)
    assert stored["sparse"] == 44 + 16 + 32  # a.weight CSR, a.bias dense, b.weight dense
    # float model, int8 estimate: 1 byte per linear weight + a 4-byte scale per output row; bias stays fp32
    assert stored["int8"] == (20 + 4 * 4) + 16 + (8 + 4 * 2)
    assert stored["serialized"] > stored["dense_fp32"]  # torch.save adds its container overhead


def test_int8_below_fp32_and_sparse_never_above_dense_for_a_transformer():
    model = tiny_model()
    stored = storage_bytes(model)
    assert stored["dense_fp32"] == 4 * parameter_count(model)
    assert stored["int8"] < stored["dense_fp32"]
    assert stored["sparse"] <= stored["dense_fp32"]
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.weight.zero_()
    assert storage_bytes(model)["sparse"] < stored["sparse"]


def test_torch_pruning_masks_and_shared_weights_are_counted_once():
    model = TwoLinears()
    prune.l1_unstructured(model.b, "weight", amount=0.5)  # keeps weight_orig and weight_mask
    assert parameter_count(model) == 20 + 4 + 8
    assert nonzero_parameters(model) == 3 + 4 + 4
    shared = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    shared[1].weight = shared[0].weight
    assert parameter_count(shared) == 9


def test_latency_returns_positive_medians_and_restores_state():
    model = tiny_model()
    model.train()
    threads = torch.get_num_threads()
    result = measure_latency(model, batch_sizes=(1, 4), seq_len=16, repeats=3, warmup=1, threads=1)
    assert set(result) == {1, 4}
    assert all(isinstance(v, float) and v > 0 for v in result.values())
    assert model.training and torch.get_num_threads() == threads


def test_latency_refuses_bad_settings():
    model = tiny_model()
    with pytest.raises(ValueError, match="batch_sizes"):
        measure_latency(model, batch_sizes=(0,))
    with pytest.raises(ValueError, match="seq_len"):
        measure_latency(model, seq_len=MAX_POS + 1)
    with pytest.raises(ValueError, match="vocab_size"):
        measure_latency(nn.Linear(2, 2))
