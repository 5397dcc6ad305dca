"""A refused command writes nothing: one ``error:`` line, exit status 2, no file or folder left behind.

``resume``, ``status`` and ``front`` read a study that must already exist, so a SQLite path that
does not exist is a mistake to report, not an empty database to create (a three-slash URL is a
path relative to the current folder, the usual slip when an absolute path was meant).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from fairfront.errors import ConfigError
from fairfront.search import cli
from fairfront.search.storage import open_storage, study_names

from conftest import FAIRFRONT, cli_env, run_cli


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", [["resume", "nope"], ["status", "nope"], ["front", "nope", "--format", "csv"]])
def test_a_missing_default_database_is_refused_and_not_created(command: list[str], tmp_path: Path) -> None:
    line = _one_line(run_cli(command, tmp_path, timeout=120))
    assert line == ("error: --storage: the SQLite database studies/fairfront.db does not exist (a path after "
                    f"sqlite:/// is relative to the current folder, here {tmp_path}/studies/fairfront.db; an absolute "
                    "path takes four slashes: sqlite:////studies/fairfront.db); give the storage that holds the "
                    "study, or create a study with fairfront run")
    assert _tree(tmp_path) == []


def test_a_three_slash_url_meant_as_absolute_gets_the_four_slash_form(tmp_path: Path) -> None:
    line = _one_line(run_cli(["status", "s", "--storage", "sqlite:///srv/studies/x.db"], tmp_path, timeout=120))
    assert "the SQLite database srv/studies/x.db does not exist" in line
    assert "an absolute path takes four slashes: sqlite:////srv/studies/x.db" in line
    assert _tree(tmp_path) == []


def test_a_missing_absolute_database_is_refused_without_a_hint(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "x.db"
    line = _one_line(run_cli(["resume", "s", "--storage", f"sqlite:///{db}"], tmp_path, timeout=120))
    assert line == (f"error: --storage: the SQLite database {db} does not exist; give the storage that holds the "
                    "study, or create a study with fairfront run")
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("command", [["run", "s.toml"], ["resume", "s"]])
def test_a_bad_argument_is_one_line_without_the_usage_block(command: list[str], tmp_path: Path) -> None:
    line = _one_line(run_cli([*command, "--n-trials", "0"], tmp_path, timeout=120))
    assert line == (f"error: argument --n-trials: 0 is not allowed: expected a whole number >= 1 "
                    f"(see: fairfront {command[0]} --help)")
    assert _tree(tmp_path) == []
    missing = _one_line(run_cli([command[0]], tmp_path, timeout=120))
    assert missing.startswith("error: the following arguments are required: ")
    assert _tree(tmp_path) == []


def test_run_still_creates_a_new_database_and_readers_do_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'fairfront.db'}"
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(url, create=False)
    assert _tree(tmp_path) == []
    assert study_names(open_storage(url)) == []  # what run does
    assert (tmp_path / "new" / "fairfront.db").is_file()
    assert study_names(open_storage(url, create=False)) == []


def test_a_dashboard_on_a_network_interface_is_warned_about(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([FAIRFRONT, "dashboard", "--host", "0.0.0.0", "--port", str(port)], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        first = proc.stderr.readline().strip()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert first == (f"warning: the dashboard on 0.0.0.0 has no authentication: anyone who reaches port {port} can "
                     "read every study and delete it")


def test_a_dashboard_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["dashboard", "--port", str(port)], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (f"error: --host: cannot listen on 127.0.0.1:{port} (Address already "
                                              "in use); choose another --port, or an --host of this machine")
    assert "Traceback" not in result.stderr


def test_loopback_hosts_are_told_apart() -> None:
    assert all(cli._is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(cli._is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.10", "example.org"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
