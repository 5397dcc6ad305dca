"""Knowledge distillation from the dense teacher (Hinton et al. 2015; Sanh et al. 2019).

Loss per example: ``(1 - alpha) * CE(student, y) + alpha * T**2 * KL(softmax(t / T) || softmax(s / T))``.
The ``T**2`` factor keeps the soft term's gradient scale independent of the temperature, so
``alpha`` means the same thing at every T. At ``alpha = 0`` the loss is exactly cross-entropy.
The teacher's logits come from the per-study cache: no trial runs the teacher again, except when a
hidden-state or attention transfer weight is above zero (those terms need the teacher's internal
states for each batch, which are too large to cache).

A student may keep fewer layers than the teacher (``student_layers``, chosen by ``layer_strategy``,
e.g. every other layer as in DistilBERT), initialised from the teacher's weights. With a
``hidden_weight`` or ``attention_weight`` above zero the loss also gains TinyBERT/MiniLM-style
transfer terms between the student's and the teacher's internal states
(:mod:`fairfront.spaces.students` holds the machinery).

Its ``[space.distillation]`` table, config and family are :mod:`fairfront.spaces.distillation_family`
(read without torch); the family's ``start`` imports this module when a trial runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fairfront.spaces import students
from fairfront.spaces.distillation_family import DistillationConfig, DistillationFamily, DistillationSpace
from fairfront.spaces.family import FamilyTrial, TrialContext

__all__ = ["DistillationSpace", "DistillationConfig", "DistillationFamily", "distillation_loss"]

def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, alpha: float, task_loss: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example distillation loss, shape ``[B]`` (reduce it yourself, e.g. with example weights).

    ``task_loss`` replaces the per-example cross-entropy term (e.g. a focal or class-balanced loss).
    """
    ce = F.cross_entropy(student_logits, labels, reduction="none") if task_loss is None else task_loss
    if alpha == 0.0:
        return ce
    t = temperature
    soft_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    soft_student = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = F.kl_div(soft_student, soft_teacher, log_target=True, reduction="none").sum(-1)
    return (1.0 - alpha) * ce + alpha * (t * t) * kl


def start_trial(config: DistillationConfig, ctx: TrialContext) -> FamilyTrial:
    """The distillation family's hooks into one trial (:meth:`DistillationFamily.start`)."""
    return _DistillationTrial(config, ctx)


class _DistillationTrial(FamilyTrial):
    def __init__(self, config: DistillationConfig, ctx: TrialContext):
        self.config = config
        self.teacher_logits = ctx.teacher_logits
        # heads removed by structured pruning leave student and teacher with different head counts
        self.average_heads = "structured" in ctx.families
        self.teacher_net: torch.nn.Module | None = None
        self.forward_kwargs = ctx.forward_kwargs
        self.mapping: dict[int, int] = {}

    def prepare(self, ctx: TrialContext) -> None:
        """Cut the student from the teacher; load a teacher network when transfer terms need its states."""
        d = self.config
        n_layers = ctx.model.config.num_hidden_layers
        keep = list(range(n_layers))
        if d.student_layers is not None and d.student_layers < n_layers:
            keep = students.layer_indices(n_layers, d.student_layers, strategy=d.layer_strategy)
            ctx.model = students.make_student(ctx.model, keep)
            ctx.record("student_layers", keep)
        self.mapping = students.layer_mapping(keep)
        if ctx.task != "classification" or (d.hidden_weight <= 0 and d.attention_weight <= 0):
            return
        self.teacher_net = ctx.teacher().to(ctx.device).eval()
        ctx.forward_kwargs["output_hidden_states"] = d.hidden_weight > 0
        if d.attention_weight > 0:
            ctx.forward_kwargs["output_attentions"] = True
            for net in (ctx.model, self.teacher_net):
                net.set_attn_implementation("eager")

    def transform_loss(self, per_example: torch.Tensor, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return distillation_loss(logits, self.teacher_logits[batch["index"]], batch["labels"],
                                 temperature=self.config.temperature, alpha=self.config.alpha, task_loss=per_example)

    def representation_penalties(self, batch: dict) -> list[torch.Tensor]:
        if self.teacher_net is None:
            return []
        d = self.config
        with torch.no_grad():
            teacher_out = self.teacher_net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           **self.forward_kwargs)
        student_out = batch["outputs"]
        terms = []
        if d.hidden_weight > 0:
            terms.append(d.hidden_weight * students.hidden_state_transfer_loss(
                student_out.hidden_states, teacher_out.hidden_states, self.mapping,
                attention_mask=batch["attention_mask"]))
        if d.attention_weight > 0:
            attention_mapping = {s - 1: t - 1 for s, t in self.mapping.items() if s > 0}
            terms.append(d.attention_weight * students.attention_transfer_loss(
                student_out.attentions, teacher_out.attentions, attention_mapping,
                attention_mask=batch["attention_mask"], average_heads=self.average_heads))
        return terms
