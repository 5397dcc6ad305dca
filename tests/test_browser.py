"""What a person sees: optuna-dashboard and ``fairfront report`` opened in headless Chromium.

A real tiny study (the real ``run_trial``, three trials, SQLite, the report artifacts) is served by
``fairfront dashboard`` as a user starts it, and opened in Debian's Chromium through its
chromedriver (selenium, nothing downloaded). The checks are on the rendered page: the objectives by
name, the Pareto-front plot with a point per trial, the trials table with short rows of flat
attributes, the study note, the report artifact, and the offline report's plots, with no console error.
Skipped where ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is absent (``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from fairfront.search import cli
from fairfront.search.driver import RunOptions, run_study
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.studyfile import parse_study_text

from conftest import FAIRFRONT, cli_env, free_port, tiny_study_text, wait_for

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader",  # software WebGL for the report's 3-D plot (local pages only)
         "--window-size=1600,1200"]
N_TRIALS = 3

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                 reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                        "chromium-driver; .ci/run installs them)")]


@pytest.fixture(scope="module")
def study(tmp_path_factory, cache_dir) -> tuple[Path, str, optuna.Study]:
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'studies.db'}"
    run_study(parse_study_text(tiny_study_text("tiny", n_trials=N_TRIALS, parallel=1, student_steps=3),
                               base_dir=folder),
              RunOptions(storage=url, cache_dir=cache_dir, artifact_dir=folder / "artifacts", log=lambda m: None,
                         executor=InProcessExecutor(1, threads=1)))
    return folder, url, optuna.load_study(study_name="tiny", storage=url)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def dashboard(study):
    """``fairfront dashboard`` on the study, as a user starts it; yields its address and the study's id."""
    folder, url, _ = study
    port = free_port()
    proc = subprocess.Popen([FAIRFRONT, "dashboard", "--storage", url, "--artifact-dir", str(folder / "artifacts"),
                             "--port", str(port)], cwd=folder, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        listing = wait_for(lambda: _json(f"http://127.0.0.1:{port}/api/studies"), 60, "optuna-dashboard to answer")
        study_id = next(s["study_id"] for s in listing["study_summaries"] if s["study_name"] == "tiny")
        yield f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _open(driver, url: str, script: str, what: str):
    """Open ``url`` and wait until ``script`` (JavaScript returning a value) gives something truthy."""
    driver.get(url)
    return wait_for(lambda: driver.execute_script(script), 30, what)


def _errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


PARETO = """const plot = document.querySelector('#graph-pareto-front');
            const points = plot ? plot.querySelectorAll('.scatterlayer .point').length : 0;
            return points ? {points, text: document.body.innerText} : null;"""

TABLE = """const rows = [...document.querySelectorAll('table tbody tr')];
           if (!rows.length) return null;
           const heads = [...document.querySelectorAll('table thead th')].map(th => th.innerText.split('\\n')[0]);
           return {heads, heights: rows.map(r => r.getBoundingClientRect().height)};"""


def test_the_dashboard_shows_the_objectives_the_front_and_flat_attributes(study, browser, dashboard) -> None:
    _, _, s = study
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    page = _open(browser, dashboard, PARETO, "the Pareto-front plot to draw its points")
    assert page["points"] == len(complete) == N_TRIALS  # one marker per COMPLETE trial
    assert "Pareto Front" in page["text"]
    table = _open(browser, f"{dashboard}/smartSelection", TABLE, "the trials table")
    assert {"accuracy", "size", "bias"} <= set(table["heads"])  # the objectives by name, not values 0, 1, 2
    for key in ("test.accuracy", "validation.accuracy", "test.bias.tpr_gap", "test.bias.tpr_gap.ci_low",
                "test.bias.tpr_gap.ci_high", "size.nonzero_params", "test.agreement_with_dense", "timings.total_s"):
        assert f"UserAttribute {key}" in table["heads"], key
    assert len(table["heights"]) == N_TRIALS and max(table["heights"]) < 200  # was ~1,050 px with nested JSON
    assert _errors(browser) == []


def test_the_dashboard_shows_the_study_note_and_the_report_artifact(study, browser, dashboard) -> None:
    _, _, s = study
    note = _open(browser, f"{dashboard}/note", "return document.body.innerText.includes('Study file') && "
                 "document.body.innerText", "the study note")
    assert "Objectives" in note and "tpr_gap" in note and "minimize" in note and "fairfront:report" in note
    trial = s.get_trials(states=(TrialState.COMPLETE,))[0]
    text = _open(browser, f"{dashboard}/trials?numbers={trial.number}",
                 f"return document.body.innerText.includes('trial-{trial.number}-report.json') && "
                 "document.body.innerText", "the trial's report artifact")
    attributes = text[text.index("User Attributes"):]  # the trial's flat attributes, each with its value
    assert "test.accuracy" in attributes and str(trial.user_attrs["test.accuracy"]) in attributes
    assert _errors(browser) == []


PLOTS = """const plots = [...document.querySelectorAll('.js-plotly-plot')];
           if (!plots.length || plots.some(p => !p.querySelector('.main-svg'))) return null;
           return plots.map(p => [p.layout.title.text, p.querySelectorAll('.point').length,
                                  p.querySelectorAll('canvas').length]);"""


def test_the_report_html_draws_every_plot_without_console_errors(study, browser, monkeypatch, capsys) -> None:
    folder, url, _ = study
    monkeypatch.chdir(folder)
    assert cli.main(["report", "tiny", "--storage", url, "--out", "report.html"]) == 0
    page = (folder / "report.html").read_text(encoding="utf-8")
    plots = _open(browser, (folder / "report.html").as_uri(), PLOTS, "the report's plots")
    assert len(plots) == page.count("Plotly.newPlot(")
    drawn = {title: (points, canvases) for title, points, canvases in plots}
    drawn_points = N_TRIALS + 1  # every trial, and the dense teacher's reference star
    assert drawn["accuracy against size"][0] == drawn_points and drawn["accuracy against bias"][0] == drawn_points
    assert drawn["accuracy, size and bias"][1] >= 1  # the 3-D front is WebGL
    assert all(points or canvases for points, canvases in drawn.values())
    assert _errors(browser) == []
