"""Dynamic int8 quantization: close to the float model, about four times smaller linear weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from fairfront.objectives.measures.size import parameter_count, storage_bytes
from fairfront.spaces.quantization import is_quantized, quantize_dynamic_int8, quantized_linear_names

VOCAB, LAYERS = 100, 2


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, num_labels=3, initializer_range=0.1)
    return BertForSequenceClassification(config).eval()


def random_inputs(n: int = 256, length: int = 16, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[: n // 2, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes the linear weight matrices occupy as stored: fp32, or int8 values plus their scales."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        elif hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            w = module.weight()
            total += w.int_repr().numel() * w.int_repr().element_size()
            total += w.q_per_channel_scales().numel() * 4  # a float32 scale per output row
    return total


def test_logits_close_and_predictions_agree():
    model = tiny_model()
    inputs = random_inputs()
    qmodel = quantize_dynamic_int8(model)
    with torch.no_grad():
        ref = model(**inputs).logits
        out = qmodel(**inputs).logits
    spread = float(ref.abs().max())
    assert spread > 0.1  # the float model's logits are not all ~0 (otherwise agreement is meaningless)
    assert float((out - ref).abs().max()) < 0.1 * spread
    agreement = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    assert agreement >= 0.95


def test_original_untouched_and_every_linear_quantized():
    model = tiny_model()
    qmodel = quantize_dynamic_int8(model)
    assert qmodel is not model and not is_quantized(model) and is_quantized(qmodel)
    assert all(isinstance(m, nn.Linear) for m in (model.classifier, model.bert.pooler.dense))
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert len(quantized_linear_names(qmodel)) == n_linear == 6 * LAYERS + 2
    assert not qmodel.training
    assert parameter_count(qmodel) == parameter_count(model)  # int8 weights are still counted


def test_linear_weights_about_four_times_smaller_and_int8_storage_below_fp32():
    model = tiny_model()
    qmodel = quantize_dynamic_int8(model)
    ratio = linear_weight_bytes(model) / linear_weight_bytes(qmodel)
    assert 3.5 < ratio <= 4.0
    q_bytes, f_bytes = storage_bytes(qmodel), storage_bytes(model)
    assert q_bytes["int8"] == q_bytes["serialized"]  # real size for a quantized model
    assert q_bytes["serialized"] < 0.6 * f_bytes["serialized"]
    assert q_bytes["int8"] < f_bytes["dense_fp32"]


def test_per_tensor_and_exclusions():
    model = tiny_model()
    qmodel = quantize_dynamic_int8(model, per_channel=False, exclude=("classifier", "bert.encoder.layer.1"))
    assert isinstance(qmodel.classifier, nn.Linear)
    assert isinstance(qmodel.bert.encoder.layer[1].attention.self.query, nn.Linear)
    names = quantized_linear_names(qmodel)
    assert len(names) == 6 + 1 and all(not n.startswith("bert.encoder.layer.1.") for n in names)
    w = qmodel.bert.encoder.layer[0].attention.self.query.weight()
    assert w.qscheme() == torch.per_tensor_affine
    with pytest.raises(ValueError, match="not modules"):
        quantize_dynamic_int8(model, exclude=("decoder",))


def test_works_on_a_structured_pruned_model():
    from fairfront.spaces.structured import structured_prune

    model = tiny_model()
    structured_prune(model, head_fraction=0.25, ffn_fraction=0.5, importance="magnitude")
    inputs = random_inputs(n=64)
    qmodel = quantize_dynamic_int8(model)
    with torch.no_grad():
        agreement = (qmodel(**inputs).logits.argmax(-1) == model(**inputs).logits.argmax(-1)).float().mean()
    assert float(agreement) >= 0.9
