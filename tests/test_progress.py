"""The run's progress: ETA and hypervolume arithmetic, the terminal's live line, and the lines a log gets."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import optuna
import pytest

from fairfront.search.driver import RunOptions, run_study
from fairfront.search.hypervolume import hypervolume_reference, hypervolume_share
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.progress import LiveLine, Progress, format_duration
from fairfront.search.studyfile import parse_study_text

from conftest import failing_on_odd_seeds, noop_trial, placeholder_prepared, tiny_study_text

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

MAXIMIZE = [True, False, False]  # accuracy, size, bias


def test_eta_is_the_remaining_waves_times_the_mean_duration() -> None:
    p = Progress(target=5, maximize=MAXIMIZE, parallel=2)
    assert p.eta_s() is None and "ETA after the first trial" in p.text()
    p.add(10.0, [0.8, 100.0, 0.1])
    p.add(20.0, [0.7, 50.0, 0.2])
    assert p.eta_s() == 2 * 15.0  # 3 left, 2 at a time: 2 waves of 15 s
    p.add(99.0, None)  # a failure: not in the mean, not a step toward the target
    assert p.eta_s() == 30.0 and "1 failed" in p.text()
    p.parallel = 3
    assert p.eta_s() == 15.0
    p.add(30.0, [0.6, 40.0, 0.3])
    p.add(30.0, [0.5, 30.0, 0.4])
    p.add(30.0, [0.4, 20.0, 0.5])
    assert p.eta_s() == 0.0 and "ETA" not in p.text() and p.text().startswith("5/5 complete")


def test_a_resumed_run_counts_from_what_the_study_holds() -> None:
    p = Progress(target=4, maximize=MAXIMIZE, parallel=1, complete=3, values=[[0.8, 100.0, 0.1]] * 3)
    assert p.text().startswith("3/4 complete · front 3") and p.eta_s() is None
    p.add(12.0, [0.9, 100.0, 0.1])
    assert p.complete == 4 and len(p.front) == 1


def test_hypervolume_of_a_2d_front_is_its_area_over_the_box() -> None:
    # minimisation form (-accuracy, size): (-0.9, 100), (-0.5, 10); reference (-0.46, 109), ideal (-0.9, 10)
    area = 0.44 * 9 + 0.04 * 99 - 0.04 * 9
    assert hypervolume_share([[0.9, 100.0], [0.5, 10.0]], [True, False]) == pytest.approx(area / (0.44 * 99))
    assert hypervolume_share([[0.7, 50.0]], [True, False]) == pytest.approx(1.0)  # one point fills its box
    assert hypervolume_share([], [True, False]) is None


def test_a_dominated_trial_inside_the_bounds_adds_nothing() -> None:
    front = [[0.9, 100.0, 0.3], [0.5, 10.0, 0.1]]
    assert hypervolume_share([*front, [0.5, 50.0, 0.2]], MAXIMIZE) == pytest.approx(hypervolume_share(front, MAXIMIZE))


def test_the_progress_front_gives_the_hypervolume_of_every_trial() -> None:
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.uniform(0.5, 1.0, 40), rng.uniform(1e3, 1e6, 40), rng.uniform(0.0, 0.4, 40)])
    p = Progress(target=40, maximize=MAXIMIZE)
    for v in values:
        p.add(1.0, v.tolist())
    assert len(p.front) < 40  # it keeps only the front, yet its reference point is every trial's
    assert p.hypervolume() == pytest.approx(hypervolume_share(values, MAXIMIZE))


def test_the_share_is_optunas_hypervolume_over_the_reports_box() -> None:
    rng = np.random.default_rng(1)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for v in np.column_stack([rng.uniform(0.5, 1, 12), rng.uniform(10, 100, 12), rng.uniform(0, 0.4, 12)]):
        study.add_trial(optuna.trial.create_trial(values=v.tolist(), distributions={}, params={}))
    values = np.array([t.values for t in study.trials])
    reference, ideal = hypervolume_reference(values, MAXIMIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = optuna.visualization.plot_hypervolume_history(study, reference.tolist()).data[0]
    box = float(np.prod(np.abs(reference - ideal)))
    assert list(history.y)[-1] / box == pytest.approx(hypervolume_share(values, MAXIMIZE))


def test_durations_read_at_a_glance() -> None:
    assert [format_duration(s) for s in (4.4, 65, 3600 + 7 * 60 + 5)] == ["4s", "1m05s", "1h07m"]


def test_the_live_line_is_rewritten_in_place_under_the_messages() -> None:
    out = io.StringIO()
    line = LiveLine(out)
    line.show("1/3 complete")
    line.log("trial 1 COMPLETE")
    line.show("2/3 complete")
    line.close()
    assert out.getvalue() == "\r\x1b[K1/3 complete\r\x1b[Ktrial 1 COMPLETE\n1/3 complete\r\x1b[K2/3 complete\n"


def _run(tmp_path, fn, **options) -> list[str]:
    messages: list[str] = []
    sf = parse_study_text(tiny_study_text("progress", n_trials=4), base_dir=tmp_path)
    run_study(sf, RunOptions(storage=f"sqlite:///{tmp_path / 'p.db'}", cache_dir=tmp_path / "c",
                             artifact_dir=tmp_path / "a", log=options.pop("log", messages.append), trial_fn=fn,
                             prepared=placeholder_prepared(), executor=InProcessExecutor(2), **options))
    return messages


def test_without_a_terminal_each_finished_trial_ends_with_the_progress(tmp_path) -> None:
    lines = [m for m in _run(tmp_path, failing_on_odd_seeds) if m.startswith("trial ")]
    assert len(lines) >= 5 and any(" FAIL: " in m for m in lines)
    counts = [int(re.search(r"\| (\d+)/4 complete", m).group(1)) for m in lines]
    assert counts == sorted(counts) and counts[-1] == 4
    assert all(re.search(r"· front \d+ · hypervolume [01]\.\d{3}", m) for m in lines if "COMPLETE" in m)
    assert "ETA" not in lines[-1] and re.search(r"ETA (\d+s|after the first trial) \(2 in parallel\)", lines[0])


def test_on_a_terminal_the_progress_is_one_line_below_the_trials(tmp_path) -> None:
    out = io.StringIO()
    live = LiveLine(out)
    _run(tmp_path, noop_trial, log=live.log, live=live)
    live.close()
    screen = out.getvalue().split("\r\x1b[K")
    shown = [s for s in screen if s.startswith(("1/4", "2/4", "3/4", "4/4"))]
    assert [s[:3] for s in shown] == ["1/4", "2/4", "3/4", "4/4"]  # rewritten, never a line of its own
    assert all("\n" not in s for s in shown[:-1]) and shown[-1].endswith("\n")
    assert sum(s.startswith("trial ") and " COMPLETE in " in s and "|" not in s for s in screen) == 4
