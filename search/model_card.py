"""The model card (``README.md``) of an exported trial: what the model is, how it scored, how to load it.

Everything in it is read from the study (its stored study file, the trial's values, parameters and
stored record), so the card says what the study measured, not what the export measured again;
the one exception is the validation accuracy of the written weights, shown beside the stored one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from fairfront.objectives.training.prepare import Prepared
from fairfront.search.attrs import stored_record
from fairfront.search.studyfile import StudyFile

__all__ = ["model_card"]


def model_card(*, study: optuna.Study, sf: StudyFile, trial: FrozenTrial, prepared: Prepared, accuracy: float,
               int8: bool, folder: Path) -> str:
    """The card's Markdown text."""
    attrs = stored_record(trial)
    validation = attrs.get("validation") or {}
    fairness = validation.get("fairness") or {}
    data = sf.data
    source = "none" if data is None else data.source + (f" ({data.path or data.name})" if data.path or data.name
                                                         else "")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:", "- fairfront",
             "- compressed", "---", "",
             f"# {study.study_name}, trial {trial.number}", "",
             f"A compressed `{sf.model.name}` sequence classifier: trial {trial.number} of the fairfront study "
             f"`{study.study_name}`, made again from the trial's stored parameters and seed "
             f"({', '.join(_families(attrs)) or 'no compression family'}).", "",
             "## Load it", "",
             "No fairfront import is needed:", "", "```python",
             "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
             f"model = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}).eval()",
             f"tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})",
             "batch = tokenizer([\"a text to classify\"], truncation=True, padding=True, return_tensors=\"pt\")",
             "label = model.config.id2label[int(model(**batch).logits.argmax(-1)[0])]", "```", "",
             f"Texts are truncated at {sf.model.max_length} tokens, as in the study.", ""]
    if int8:
        lines += ["**Int8 trial.** The study measured this trial after post-training dynamic int8 quantization "
                  "(`torch.ao.quantization.quantize_dynamic` on every `nn.Linear`, per-channel weight scales). These "
                  "are its float weights from before that step; quantize them the same way to get the measured "
                  "model. The float weights' "
                  "own validation accuracy is shown below.", ""]
    lines += _objectives(study, sf, trial, fairness, accuracy, int8)
    lines += _groups(fairness)
    lines += ["## Parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in sorted(trial.params.items())]
    notes = {k: attrs[k] for k in ("student_layers", "structured", "achieved_sparsity") if k in attrs}
    if notes:
        lines += ["", "What the compression did:", "", "```json", json.dumps(notes, indent=1), "```"]
    lines += ["", "## Study", "",
              f"- model: `{sf.model.name}` (max_length {sf.model.max_length})",
              f"- data: {source}" + (f"; {prepared.data_name}" if prepared.data_name != source else "")
              + (f"; groups: {', '.join(fairness['groups'])}" if fairness.get("groups") else ""),
              f"- labels: {', '.join(prepared.label_names)}",
              f"- objectives: {', '.join(_objective_names(study, sf))}",
              f"- trial seed {sf.study.seed + trial.number} (study seed {sf.study.seed}), sampler {sf.study.sampler}"]
    if prepared.citation:
        lines += [f"- data citation: {prepared.citation}"]
    lines += ["", "The study file:", "", "```toml", sf.text.strip(), "```", ""]
    return "\n".join(lines)


def _families(attrs: dict[str, Any]) -> list[str]:
    compression = attrs.get("compression") or {}
    return [name for name, config in compression.items() if config is not None]


def _objective_names(study: optuna.Study, sf: StudyFile) -> list[str]:
    measures = [sf.objectives.accuracy, sf.objectives.size, *sf.objectives.bias]
    names = study.metric_names or sf.objectives.names
    return [f"{n} = {m} ({d.name.lower()})" for n, m, d in zip(names, measures, study.directions)]


def _objectives(study: optuna.Study, sf: StudyFile, trial: FrozenTrial, fairness: dict[str, Any],
                accuracy: float, int8: bool) -> list[str]:
    measures = [sf.objectives.accuracy, sf.objectives.size, *sf.objectives.bias]
    names = study.metric_names or sf.objectives.names
    ci = fairness.get("ci") or {}
    level = fairness.get("confidence")
    ci_head = f"{level:.0%} CI" if isinstance(level, float) else "CI"
    lines = ["## Objectives (validation split)", "",
             f"| objective | measure | direction | value | {ci_head} |", "|---|---|---|---|---|"]
    for name, measure, direction, value in zip(names, measures, study.directions, trial.values or []):
        interval = ci.get(measure)
        shown = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval is not None and _pair(interval) else "—"
        lines.append(f"| {name} | `{measure}` | {direction.name.lower()} | {_cell(value)} | {shown} |")
    resamples = fairness.get("n_resamples")
    if ci and resamples:
        lines += ["", f"Intervals: {resamples} bootstrap resamples of the validation split."]
    record = stored_record(trial)
    test = (record.get("test") or {}).get("accuracy") or {}
    stored = ((record.get("validation") or {}).get("accuracy") or {}).get("accuracy")
    lines += ["", f"Validation accuracy of these weights, measured when they were written: {accuracy:.4f}"
              + (f" (stored: {stored:.4f}{', int8 model' if int8 else ''})" if isinstance(stored, float) else "")
              + (f"; test accuracy stored: {test['accuracy']:.4f}" if isinstance(test.get("accuracy"), float) else "")
              + ".", ""]
    return lines


def _groups(fairness: dict[str, Any]) -> list[str]:
    """Per-group accuracy, then each class's rates per group (validation split)."""
    rates = fairness.get("group_rates") or {}
    if not rates:
        return []
    counts = fairness.get("group_counts") or {}
    lines = ["## Groups (validation split)", "", "| group | n | accuracy |", "|---|---|---|"]
    lines += [f"| {g} | {counts.get(g, '')} | {_cell(r.get('accuracy'))} |" for g, r in rates.items()]
    by_class = fairness.get("class_group_rates") or {}
    if by_class:
        lines += ["", "| class | group | n | TPR | FPR | selection rate |", "|---|---|---|---|---|---|"]
        for label, groups in by_class.items():
            for g, r in groups.items():
                lines.append(f"| {label} | {g} | {r.get('n', '')} | {_cell(r.get('tpr'))} | {_cell(r.get('fpr'))} "
                             f"| {_cell(r.get('selection_rate'))} |")
    return lines + [""]


def _pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value)


def _cell(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)
