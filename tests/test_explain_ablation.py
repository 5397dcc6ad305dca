"""Ablation and the gradient estimate on a tiny BERT whose weights plant the group signal in one head.

The model reads two tokens: a content token (decides the class, or is neutral) at the first position,
which the classifier reads, and a group token at the second. Only layer 0's head 0 moves the group
token's signal to the first position; every other head's values and every feed-forward block are zero.
On neutral examples the group decides the prediction, so the model has a TPR gap, and only that head
can carry it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from fairfront.objectives.analysis import (
    PairedBootstrap,
    ablate_components,
    ablated_predictions,
    components,
    gap_gradients,
    rank_agreement,
)
from fairfront.objectives.data.task import EncodedSplit

NEG, POS, NEUTRAL, GROUP0, GROUP1 = 10, 11, 12, 20, 21


def planted_model() -> BertForSequenceClassification:
    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                        max_position_embeddings=8, type_vocab_size=1, num_labels=2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if "LayerNorm.weight" in name else 0.0)
        words = model.bert.embeddings.word_embeddings.weight
        words[POS, 0], words[POS, 4] = 1.0, -1.0
        words[NEG, 0], words[NEG, 4] = -1.0, 1.0
        words[GROUP1, 1], words[GROUP1, 5] = 1.0, -1.0
        words[GROUP0, 1], words[GROUP0, 5] = -1.0, 1.0
        layer = model.bert.encoder.layer[0]
        layer.attention.self.value.weight[0, 1] = 1.0  # head 0 (context dims 0-3) reads the group dimension
        out = layer.attention.output.dense.weight
        out[2, 0], out[6, 0] = 1.0, -1.0  # ... and writes it where the classifier reads it
        model.bert.pooler.dense.weight.copy_(torch.eye(8))
        model.classifier.weight[1, 0], model.classifier.weight[1, 2] = 3.0, 1.0
    return model


def planted_split(n: int = 240, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 2, n)
    labels = rng.integers(0, 2, n)
    neutral = rng.random(n) < 0.4
    content = np.where(neutral, NEUTRAL, np.where(labels == 1, POS, NEG))
    ids = [np.array([c, GROUP1 if g else GROUP0], dtype=np.int64) for c, g in zip(content, groups)]
    return EncodedSplit(ids, labels.astype(np.int64), groups.astype(np.int64))


@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(0)
    return planted_model(), planted_split()


def test_the_planted_model_has_a_gap_only_that_head_carries(planted) -> None:
    model, split = planted
    pred = ablated_predictions(model, split, [], pad_id=0)[0]
    neutral = np.array([ids[0] == NEUTRAL for ids in split.input_ids])
    assert (pred[~neutral] == split.labels[~neutral]).all()  # content decides where there is content
    assert (pred[neutral] == split.groups[neutral]).all()  # the group decides the rest


def test_ablating_the_planted_head_ranks_it_first_with_a_paired_interval(planted) -> None:
    model, split = planted
    lines: list[str] = []
    result = ablate_components(model, split, pad_id=0, focus="tpr_gap", n_resamples=200, log=lines.append)
    assert len(lines) == 3  # one line per component set: layer 0 heads, layer 1 heads, feed-forward blocks
    assert len(result["components"]) == len(components(model)) == 6
    top, second = result["ranking"][0], result["ranking"][1]
    assert top["component"] == "layer 0 head 0"
    assert top["delta"] < -0.2 and top["ci"][1] < 0 and top["p_adjusted"] < 0.05  # the gap closes without it
    assert second["delta"] == 0.0 and second["ci"] == [0.0, 0.0] and second["p_value"] == 1.0


def test_the_gradient_estimate_agrees_with_ablation_on_the_planted_head(planted) -> None:
    model, split = planted
    estimate = gap_gradients(model, split, pad_id=0)
    assert max(estimate, key=estimate.get) == "layer 0 head 0"
    assert all(v == 0.0 for k, v in estimate.items() if k != "layer 0 head 0")
    ablation = ablate_components(model, split, pad_id=0, focus="tpr_gap", n_resamples=50, log=lambda m: None)
    agreement = rank_agreement(estimate, ablation)
    assert agreement["n"] == 6 and agreement["spearman"] == pytest.approx(1.0)
    ffn_only = rank_agreement(estimate, ablation, kind="ffn")
    assert ffn_only["spearman"] is None  # every feed-forward block is zero on both sides: undefined, said so


def test_the_paired_bootstrap_is_paired(planted) -> None:
    _, split = planted
    base = split.labels.copy()
    paired = PairedBootstrap(split.labels, split.groups, base, n_resamples=100, seed=1)
    same = paired.effect(base)
    assert all(cell["delta"] == 0.0 and cell["ci"] == [0.0, 0.0] for cell in same.values())
    flipped = base.copy()
    flipped[:5] = 1 - flipped[:5]  # five errors: accuracy drops by exactly 5/n on every resample's pairing
    acc = paired.effect(flipped)["accuracy"]
    assert acc["delta"] == pytest.approx(-5 / len(base))
    assert acc["ci"][1] < 0 < acc["base"]
