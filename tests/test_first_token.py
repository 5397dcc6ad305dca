"""The last layer at the first position only: the same logits and gradients, less work, only where exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training.first_token import first_token_layer, first_token_only
from fairfront.objectives.training.loop import TrainSettings, predict_logits, train
from fairfront.spaces.quantization import quantize_dynamic_int8
from fairfront.spaces.structured import prune_heads

_COMMON = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=40, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _model(arch: str, attention: str = "sdpa") -> nn.Module:
    torch.manual_seed(0)
    if arch == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(**_COMMON))
    elif arch == "roberta":
        model = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**_COMMON, pad_token_id=1))
    else:
        model = transformers.ElectraForSequenceClassification(transformers.ElectraConfig(**_COMMON, embedding_size=16))
    model.set_attn_implementation(attention)
    return model


def _batch() -> dict:
    ids = torch.randint(5, 60, (4, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padded rows: the first position must still ignore the padding
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


def _logits_and_grads(model: nn.Module, batch: dict, *, first_token: bool) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    with first_token_only(model, enabled=first_token) as on:
        assert on == first_token
        out = model(**batch)
        out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["bert", "roberta", "electra"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_logits_and_every_gradient_equal_the_full_forward(arch: str, attention: str) -> None:
    model, batch = _model(arch, attention).train(), _batch()
    full_logits, full_grads = _logits_and_grads(model, batch, first_token=False)
    logits, grads = _logits_and_grads(model, batch, first_token=True)
    torch.testing.assert_close(logits, full_logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == full_grads.keys()
    scale = max(float(g.abs().max()) for g in full_grads.values())
    for name, g in full_grads.items():  # key biases have a zero true gradient: compare on the model's scale
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_the_last_layer_computes_one_position_and_gets_its_forward_back() -> None:
    model, batch = _model("bert").eval(), _batch()
    layer = first_token_layer(model)
    assert layer is model.bert.encoder.layer[-1]
    rows: list[tuple[int, ...]] = []
    handle = layer.intermediate.dense.register_forward_hook(lambda m, args, out: rows.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(**batch)
        with first_token_only(model):
            model(**batch)
        with pytest.raises(RuntimeError, match="boom"), first_token_only(model):
            raise RuntimeError("boom")
        model(**batch)
    handle.remove()
    assert rows == [(4, 9, 32), (4, 1, 32), (4, 9, 32)]  # full, first position only, full again
    assert "forward" not in vars(layer)


def test_equal_after_removing_heads_of_the_last_layer() -> None:
    model, batch = _model("bert").eval(), _batch()
    prune_heads(model, {1: [0, 2]})
    with torch.no_grad():
        full = model(**batch).logits
        with first_token_only(model) as on:
            fast = model(**batch).logits
    assert on
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)


def test_not_applied_where_the_head_reads_other_positions() -> None:
    common = {k: v for k, v in _COMMON.items() if k != "num_labels"}
    masked_lm = transformers.BertForMaskedLM(transformers.BertConfig(**common))
    distil = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=60, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=40))
    # dynamic int8 quantizes each activation tensor with its own range: a row depends on the others
    quantized = quantize_dynamic_int8(_model("bert").eval())
    for model in (masked_lm, distil, quantized):
        assert first_token_layer(model) is None
        with first_token_only(model) as on:
            assert not on


def _split(n: int = 24) -> EncodedSplit:
    rng = np.random.default_rng(0)
    ids = [np.concatenate([[2], rng.integers(5, 60, size=rng.integers(2, 12))]).astype(np.int64) for _ in range(n)]
    return EncodedSplit(ids, rng.integers(0, 3, size=n).astype(np.int64), np.zeros(n, dtype=np.int64))


def test_predict_logits_equal_the_plain_forward() -> None:
    model, split = _model("bert").eval(), _split()
    fast = predict_logits(model, split, batch_size=5, pad_id=0)
    with torch.no_grad():
        for i, ids in enumerate(split.input_ids):
            plain = model(input_ids=torch.tensor(ids)[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long))
            np.testing.assert_allclose(fast[i], plain.logits[0].numpy(), rtol=1e-5, atol=1e-5)


def test_training_that_reads_hidden_states_gets_every_position() -> None:
    model, split = _model("bert"), _split()
    widths: list[tuple[int, int]] = []

    def loss_fn(logits, batch):
        widths.append((batch["outputs"].hidden_states[-1].shape[1], batch["input_ids"].shape[1]))
        return nn.functional.cross_entropy(logits, batch["labels"])

    train(model, split, TrainSettings(max_steps=3, batch_size=8), loss_fn=loss_fn, seed=0, pad_id=0,
          forward_kwargs={"output_hidden_states": True})
    assert len(widths) == 3 and all(last == width for last, width in widths)
