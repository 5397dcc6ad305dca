"""The study's optuna-dashboard note: what the objectives are, what the trial attributes are, the study file.

optuna-dashboard shows a study's note (Markdown) on the study's Note page. It says what a reader of
the dashboard needs and the attribute table cannot: each objective's measure, direction, unit and
definition, which measure "bias" is, what the flat trial attributes are, where the full record of a
trial lives, and the study file itself. It is written with ``optuna_dashboard.save_note`` (study
system attributes), through the driver's storage.

Trials get no note: ``save_note`` reads every study system attribute and writes two more per trial,
so a note cost the driver 17 ms per trial in a new study and 94 ms after 300 trials (measured on
SQLite), against about 8 ms for the rest of a trial's bookkeeping; a trial's numbers are its flat
attributes instead.

Example:
    >>> print(unit(MEASURES["latency_b1_ms"]))
    milliseconds
"""

from __future__ import annotations

import optuna

from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.measures.registry import MEASURES, Measure
from fairfront.objectives.measures.report import RECORD_ATTR
from fairfront.search.studyfile import StudyFile

__all__ = ["unit", "study_note", "write_study_note"]


def unit(measure: Measure) -> str:
    """The unit a measure's values are in (its definition says how it is computed)."""
    if measure.name.endswith("_bytes"):
        return "bytes"
    if measure.name.endswith("_ms"):
        return "milliseconds"
    if measure.kind == "size":
        return "parameters"
    if "intrinsic" in measure.needs:
        return "benchmark score (see the definition)"
    return "share, 0 to 1"


def _objective_rows(spec: ObjectiveSpec) -> list[str]:
    kinds = ["accuracy", "size"] + ["bias"] * len(spec.bias)
    measures = [spec.accuracy, spec.size, *spec.bias]
    rows = ["| objective | measure | direction | unit | definition |", "|---|---|---|---|---|"]
    for name, kind, measure, direction in zip(spec.names, kinds, measures, spec.directions):
        m = MEASURES[measure]
        split = "" if kind == "size" else " (validation split)"
        paper = f" ({m.paper})" if m.paper else ""
        rows.append(f"| **{name}** | `{measure}`{split} | {direction} | {unit(m)} | {m.description}{paper} |")
    return rows


def _attribute_lines(spec: ObjectiveSpec) -> list[str]:
    bias = spec.bias[0]
    return [
        "## Trial attributes", "",
        "Each trial's user attributes are flat numbers the table, the filters and the parallel-coordinate "
        "plot can use:", "",
        f"- `validation.<measure>`, `test.<measure>`: accuracy measures (`test.{spec.accuracy}`); "
        "`<split>.agreement_with_dense`: share of predictions equal to the dense teacher's",
        f"- `<split>.bias.<measure>`: bias measures (`test.bias.{bias}`), and for each bias objective its "
        f"bootstrap interval `<split>.bias.{bias}.ci_low` and `.ci_high`",
        f"- `size.<measure>`: size and latency measures (`size.{spec.size}`); `achieved_sparsity` where pruned",
        "- `timings.<part>_s`: seconds (train, eval, total); `train.steps`, `train.final_loss`", "",
        "The full record of a trial (per-group rates, every interval, forgetting and counterfactual reports) "
        f"is its artifact `trial-<number>-report.json` and its system attribute `{RECORD_ATTR}`.", "",
    ]


def study_note(sf: StudyFile) -> str:
    """The study's note: objectives, the trial attributes, and the study file."""
    spec = sf.objectives
    bias = ", ".join(f"`{b}` ({MEASURES[b].description})" for b in spec.bias)
    lines = [f"# {sf.study.name}", "",
             f"Each trial compresses `{sf.model.name}` fine-tuned on `{sf.data.source if sf.data else 'none'}` "
             "and measures how accurate, how small and how biased the result is. The objective values are "
             "measured on the validation split; the test split is in the trial attributes.", "",
             "## Objectives", "", *_objective_rows(spec), "",
             f"**bias** is {bias}: lower is fairer.", "", *_attribute_lines(spec),
             "## Study file", "", "```toml", sf.text.strip(), "```", ""]
    return "\n".join(lines)


def write_study_note(study: optuna.Study, sf: StudyFile) -> None:
    """Save the study note, unless the study has one (a note a reader edited in the dashboard is kept)."""
    from optuna_dashboard import get_note, save_note  # about 2 s of imports: only where a note is written

    if not get_note(study):
        save_note(study, study_note(sf))

