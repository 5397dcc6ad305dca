"""Students cut from the teacher, and the hidden-state and attention transfer losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from fairfront.spaces.structured import layer_shapes, load_pruned, structured_prune
from fairfront.spaces.students import (
    attention_transfer_loss,
    hidden_state_transfer_loss,
    layer_indices,
    layer_mapping,
    make_student,
)

VOCAB, LAYERS, HIDDEN = 100, 4, 64


def teacher_model(seed: int = 0, *, hidden: int = HIDDEN, layers: int = LAYERS,
                  attn: str = "eager") -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=3,
                        initializer_range=0.1)
    model = BertForSequenceClassification(config).eval()
    model.set_attn_implementation(attn)
    return model


def inputs(n: int = 4, length: int = 10, seed: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, length // 2:] = 0
    return {"input_ids": torch.randint(1, VOCAB, (n, length), generator=g), "attention_mask": mask}


def run(model: nn.Module, x: dict[str, torch.Tensor]):
    return model(**x, output_hidden_states=True, output_attentions=True)


def test_layer_indices_strategies():
    assert layer_indices(12, 6, strategy="every_other") == [0, 2, 4, 6, 8, 10]
    assert layer_indices(12, 6, strategy="uniform") == [0, 2, 4, 7, 9, 11]  # DistilBERT's released choice
    assert layer_indices(6, 3, strategy="uniform") == [0, 3, 5]  # 2.5 rounds half up
    assert layer_indices(6, 1, strategy="uniform") == [0]
    assert layer_indices(6, 6, strategy="uniform") == list(range(6))
    assert layer_indices(6, 2, strategy="top") == [4, 5]
    assert layer_indices(6, 2, strategy="bottom") == [0, 1]
    with pytest.raises(ValueError, match="every_other cannot keep"):
        layer_indices(6, 4, strategy="every_other")
    with pytest.raises(ValueError, match="n_keep"):
        layer_indices(6, 0)
    with pytest.raises(ValueError, match="strategy"):
        layer_indices(6, 2, strategy="middle")


def test_student_with_all_layers_equals_teacher_and_is_a_copy():
    teacher = teacher_model()
    student = make_student(teacher, list(range(LAYERS)))
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(student(**x).logits, teacher(**x).logits)
        student.classifier.weight.add_(1.0)
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)  # no shared storage
    assert student.bert.encoder.layer[0] is not teacher.bert.encoder.layer[0]


def test_student_keeps_the_teachers_weights_in_the_chosen_layers():
    teacher = teacher_model()
    keep = layer_indices(LAYERS, 2, strategy="every_other")
    student = make_student(teacher, keep)
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    assert teacher.config.num_hidden_layers == LAYERS and len(teacher.bert.encoder.layer) == LAYERS
    for j, t in enumerate(keep):
        s_state = student.bert.encoder.layer[j].state_dict()
        t_state = teacher.bert.encoder.layer[t].state_dict()
        assert s_state.keys() == t_state.keys()
        assert all(torch.equal(s_state[k], t_state[k]) for k in s_state)
    for part in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(student.state_dict()[part], teacher.state_dict()[part])
    out = run(student, inputs())
    assert out.logits.shape == (4, 3) and len(out.hidden_states) == 3 and len(out.attentions) == 2


def test_student_of_a_pruned_teacher_round_trips(tmp_path):
    teacher = teacher_model(attn="sdpa")
    structured_prune(teacher, head_fraction=0.3, ffn_fraction=0.3, importance="magnitude", scope="global")
    student = make_student(teacher, [1, 3])
    shapes = layer_shapes(teacher)
    assert layer_shapes(student) == {k: [v[1], v[3]] for k, v in shapes.items()}
    student.save_pretrained(tmp_path)
    reloaded = load_pruned(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs()).logits, student(**inputs()).logits)
    with pytest.raises(ValueError, match="strictly increasing"):
        make_student(teacher, [2, 1])
    with pytest.raises(ValueError, match="strictly increasing"):
        make_student(teacher, [])


def test_hidden_state_loss_zero_for_identical_positive_otherwise_with_gradients():
    teacher = teacher_model()
    x = inputs()
    with torch.no_grad():
        t_out = run(teacher, x)
    mapping = layer_mapping(list(range(LAYERS)))
    assert float(hidden_state_transfer_loss(t_out.hidden_states, t_out.hidden_states, mapping)) == 0.0
    student = make_student(teacher, [0, 2])
    s_out = run(student, x)
    loss = hidden_state_transfer_loss(s_out.hidden_states, t_out.hidden_states, layer_mapping([0, 2]),
                                      attention_mask=x["attention_mask"])
    assert loss.item() > 0
    loss.backward()
    assert student.bert.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0


def test_hidden_state_loss_ignores_padding_and_needs_a_projection_for_other_widths():
    teacher = teacher_model()
    x = inputs()
    with torch.no_grad():
        t_hidden = list(run(teacher, x).hidden_states)
        s_hidden = [h + 0.1 for h in t_hidden]
    changed = [h.clone() for h in t_hidden]
    for h in changed:
        h[0, 5:] += 100.0  # only padded positions of sequence 0 differ
    mask = x["attention_mask"]
    pairs = [(1, 1), (2, 2)]
    base = hidden_state_transfer_loss(s_hidden, t_hidden, pairs, attention_mask=mask)
    torch.testing.assert_close(hidden_state_transfer_loss(s_hidden, changed, pairs, attention_mask=mask), base)
    torch.testing.assert_close(base, torch.tensor(0.01))

    narrow = teacher_model(hidden=32, layers=2)
    s_out = run(narrow, x)
    with pytest.raises(ValueError, match="projection"):
        hidden_state_transfer_loss(s_out.hidden_states, t_hidden, {2: LAYERS})
    projection = nn.Linear(32, HIDDEN)
    loss = hidden_state_transfer_loss(s_out.hidden_states, t_hidden, {2: LAYERS}, projection=projection,
                                      attention_mask=mask)
    loss.backward()
    assert loss.item() > 0 and projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["mse", "kl"])
def test_attention_loss_zero_for_identical_positive_otherwise_with_gradients(method):
    teacher = teacher_model()
    x = inputs()
    with torch.no_grad():
        t_att = run(teacher, x).attentions
    mapping = {j: j for j in range(LAYERS)}
    same = attention_transfer_loss(t_att, t_att, mapping, method=method, attention_mask=x["attention_mask"])
    assert abs(float(same)) < 1e-6
    student = make_student(teacher_model(seed=1), [0, 3])
    s_att = run(student, x).attentions
    loss = attention_transfer_loss(s_att, t_att, {0: 0, 1: 3}, method=method, attention_mask=x["attention_mask"])
    assert loss.item() > 0
    loss.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_attention_loss_needs_eager_maps_and_matching_heads():
    x = inputs()
    sdpa = teacher_model(attn="sdpa")
    with torch.no_grad():
        empty = sdpa(**x, output_attentions=True).attentions
    with pytest.raises(ValueError, match="eager"):
        attention_transfer_loss(empty or (), empty or (), {0: 0})
    teacher = teacher_model()
    pruned = teacher_model()
    structured_prune(pruned, head_fraction=0.25, importance="magnitude", scope="layer")
    with torch.no_grad():
        t_att, p_att = run(teacher, x).attentions, run(pruned, x).attentions
    with pytest.raises(ValueError, match="average_heads"):
        attention_transfer_loss(p_att, t_att, {0: 0})
    loss = attention_transfer_loss(p_att, t_att, {0: 0}, method="kl", average_heads=True)
    assert loss.item() > 0
    with pytest.raises(ValueError, match="method"):
        attention_transfer_loss(t_att, t_att, {0: 0}, method="cosine")
