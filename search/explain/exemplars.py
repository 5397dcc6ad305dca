"""Which examples: the compression-identified exemplars (CIEs) of a trial or of the front, readable.

A trial of a study with a dense population stores its CIEs (validation split): their index and the
compressed model's prediction there (``validation.forgetting.cie.examples``); everywhere else it
predicts the population's modal class, so its predictions are rebuilt exactly. A trial's CIEs are
the stored ones; the front's are Hooker et al.'s with a compressed *population*: the examples where
the modal prediction of the front's trials differs from the dense population's
(:func:`~fairfront.objectives.measures.forgetting.compression_identified_exemplars`). Each exemplar
is given with its text, label, group, the compressed prediction(s) and the dense population's
votes; the make-up compares the CIEs' classes and groups with the split's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from fairfront.errors import ConfigError
from fairfront.objectives.measures.forgetting import compression_identified_exemplars, modal_predictions
from fairfront.search.front_data import trial_report

__all__ = ["stored_predictions", "exemplars", "write_exemplars", "EXEMPLAR_FORMATS"]

EXEMPLAR_FORMATS = (".csv", ".jsonl")


def stored_predictions(trial: FrozenTrial, population: np.ndarray) -> np.ndarray:
    """The trial's validation predictions, rebuilt from its stored CIEs and the population's modal class."""
    scores = trial_report(trial).splits.get("validation")
    cie = ((scores.forgetting if scores is not None else None) or {}).get("cie") or {}
    stored = cie.get("examples")
    if not stored:
        raise ConfigError("--exemplars", message=f"trial {trial.number} stored no compression-identified exemplars "
                          "(they are stored by studies with [bias] dense_population >= 1, from this version on)")
    pred = modal_predictions(population)
    pred[np.asarray(stored["index"], dtype=np.int64)] = np.asarray(stored["prediction"], dtype=np.int64)
    return pred


def _makeup(values: list[str], mask: np.ndarray) -> dict[str, dict[str, float | int]]:
    arr = np.asarray(values, dtype=object)
    out = {}
    for level in sorted(set(values)):
        member = arr == level
        out[level] = {"n": int(member.sum()), "share": float(member.mean()), "cie_n": int((member & mask).sum()),
                      "cie_share": float((member & mask).sum() / mask.sum()) if mask.any() else 0.0}
    return out


def exemplars(trials: list[FrozenTrial], population: np.ndarray, *, texts: list[str], labels: list[str],
              groups: list[str], label_names: tuple[str, ...]) -> dict[str, Any]:
    """The CIEs of ``trials`` (one trial, or the front) as rows, with their class and group make-up."""
    compressed = np.stack([stored_predictions(t, population) for t in trials])
    mask = compression_identified_exemplars(population, compressed)
    rows = []
    for i in np.flatnonzero(mask):
        votes = np.bincount(population[:, i], minlength=len(label_names))
        rows.append({"index": int(i), "text": texts[i], "label": labels[i], "group": groups[i],
                     "compressed": [label_names[p] for p in compressed[:, i]],
                     "dense_votes": {label_names[c]: int(v) for c, v in enumerate(votes) if v}})
    return {"trials": [t.number for t in trials], "n": len(texts), "n_cie": int(mask.sum()), "rows": rows,
            "class_makeup": _makeup(labels, mask), "group_makeup": _makeup(groups, mask)}


def write_exemplars(rows: list[dict[str, Any]], path: Path) -> None:
    """CSV (votes and predictions as JSON text) or JSON Lines, by the file's suffix; written whole or not at all."""
    partial = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("w", encoding="utf-8", newline="") as out:
        if path.suffix == ".jsonl":
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(out, fieldnames=["index", "text", "label", "group", "compressed", "dense_votes"])
            writer.writeheader()
            writer.writerows({**row, "compressed": json.dumps(row["compressed"]),
                              "dense_votes": json.dumps(row["dense_votes"])} for row in rows)
    partial.replace(path)
