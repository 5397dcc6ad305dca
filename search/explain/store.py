"""Where ``explain`` keeps its results: a compact study attribute and the full record as an Optuna artifact.

The study attribute ``fairfront.explain`` holds what the report and the dashboard show (importances,
partial dependence, who pays, the top of each ablation ranking, the exemplars' make-up); the full
record (every component's every measure with its interval, every gradient estimate, every exemplar)
is a JSON artifact of the study, named by ``artifact_id`` in the attribute. Analyses of models
(``--trial N``, the teacher) accumulate across runs under ``models``; the study-level parts are
replaced by the latest run's.

Nothing is stored until every analysis has finished; the two writes then run with Ctrl-C held back
(it takes effect once they are done), so an interrupted ``explain`` leaves the study as it was.
"""

from __future__ import annotations

import json
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from fairfront.jsonsafe import json_safe

__all__ = ["EXPLAIN_ATTR", "TOP", "compact", "store"]

EXPLAIN_ATTR = "fairfront.explain"
TOP = 10
"""Components of each ablation ranking kept in the study attribute (all of them are in the artifact)."""


def _compact_model(model: dict[str, Any]) -> dict[str, Any]:
    ablation = model["ablation"]
    return {"trial": model["trial"], "focus": ablation["focus"], "n": ablation["n"],
            "n_resamples": ablation["n_resamples"], "base": ablation["base"], "top": ablation["ranking"][:TOP],
            "agreement": model["agreement"]}


def compact(record: dict[str, Any], previous: Any) -> dict[str, Any]:
    """The study attribute for ``record``, keeping earlier runs' model analyses that this run did not redo."""
    models = dict((previous or {}).get("models") or {}) if isinstance(previous, dict) else {}
    models.update({key: _compact_model(m) for key, m in record.get("models", {}).items()})
    kept = ("evaluator", "n_complete", "importance", "families", "dependence", "who_pays")
    out: dict[str, Any] = {k: record[k] for k in kept if k in record}
    if record.get("exemplars"):
        out["exemplars"] = {k: v for k, v in record["exemplars"].items() if k != "rows"}
    out["models"] = models
    return json_safe(out)


@contextmanager
def _hold_interrupts() -> Iterator[None]:
    """Ctrl-C during the block is delivered when it ends."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def store(study: optuna.Study, record: dict[str, Any], artifact_dir: Path,
          also: Callable[[], None] | None = None) -> str:
    """Write the full record as an artifact of the study, then the compact attribute, then ``also`` (another
    file the command writes); returns the artifact id."""
    summary = compact(record, study.user_attrs.get(EXPLAIN_ATTR))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"explain-{study.study_name}.json"
        path.write_text(json.dumps(json_safe(record), indent=1), encoding="utf-8")
        with _hold_interrupts():
            artifact_dir.mkdir(parents=True, exist_ok=True)
            artifact_id = upload_artifact(artifact_store=FileSystemArtifactStore(str(artifact_dir)),
                                          file_path=str(path), study_or_trial=study, mimetype="application/json")
            study.set_user_attr(EXPLAIN_ATTR, {**summary, "artifact_id": artifact_id})
            if also is not None:
                also()
    return artifact_id
