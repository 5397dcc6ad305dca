"""The prepared-study cache is checked on every load: a damaged entry is prepared again, never used.

A truncated file used to crash every run and resume of its study; a flipped byte in the teacher's
weights was loaded without complaint and every trial compressed a corrupted teacher.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from safetensors.torch import load_file

from fairfront.objectives.training.loop import predict_logits
from fairfront.objectives.training.prepare import (
    MANIFEST,
    CorruptCache,
    cached,
    compute,
    load_cached,
    prepare,
    store,
    verify,
)
from fairfront.search import driver
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.options import RunOptions
from fairfront.search.studyfile import parse_study_text

from conftest import tiny_study_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def study_file():
    return parse_study_text(tiny_study_text("integrity", n_trials=1, parallel=1, student_steps=3), base_dir=Path("."))


@pytest.fixture(scope="module")
def original(study_file):
    return compute(study_file.prepare_spec, log=lambda m: None, device=torch.device("cpu"))


@pytest.fixture
def cache(original, tmp_path: Path) -> Path:
    """A fresh, intact cache root holding the original prepared study."""
    store(original, tmp_path / original.fingerprint)
    return tmp_path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_weight_bit(path: Path) -> None:
    """Flip one bit inside a tensor's bytes (not the header): the file still loads as safetensors."""
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    data[8 + header + (len(data) - 8 - header) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _assert_same_teacher(rebuilt, original) -> None:
    for key, tensor in original.teacher_state.items():
        assert torch.equal(rebuilt.teacher_state[key], tensor), key
    logits = predict_logits(rebuilt.teacher(), rebuilt.splits["validation"], batch_size=64, pad_id=rebuilt.pad_id,
                            device=torch.device("cpu"))
    np.testing.assert_allclose(logits, original.teacher_logits["validation"], rtol=0, atol=1e-5)
    for split, expected in original.teacher_logits.items():
        np.testing.assert_array_equal(rebuilt.teacher_logits[split], expected)


@pytest.mark.parametrize("damage", [_truncate, _flip_a_weight_bit], ids=["truncated", "bit_flip"])
def test_a_damaged_teacher_is_detected_and_prepared_again(damage, study_file, original, cache: Path) -> None:
    folder = cache / original.fingerprint
    teacher = folder / "teacher.safetensors"
    damage(teacher)
    if damage is _flip_a_weight_bit:  # the format alone cannot tell: only the checksum does
        damaged = load_file(str(teacher))
        assert any(not torch.equal(damaged[k], v) for k, v in original.teacher_state.items())
    with pytest.raises(CorruptCache, match="teacher.safetensors is corrupt") as info:
        load_cached(folder)
    assert info.value.file == "teacher.safetensors"

    lines: list[str] = []
    rebuilt = prepare(study_file.prepare_spec, cache, log=lines.append, device=torch.device("cpu"))
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [f"warning: prepared-study cache {folder}: teacher.safetensors is corrupt (its SHA-256 "
                        "differs from the one stored); preparing the study again"]
    assert any(line == f"prepared study cached in {folder}" for line in lines)
    _assert_same_teacher(rebuilt, original)
    verify(folder)  # the entry on disk is whole again
    again: list[str] = []
    _assert_same_teacher(prepare(study_file.prepare_spec, cache, log=again.append), original)
    assert again == [f"prepared study found in cache {folder}"]


@pytest.mark.parametrize("name", ["splits.npz", "meta.json"])
def test_every_cached_file_is_checked(name: str, original, cache: Path) -> None:
    folder = cache / original.fingerprint
    if name == "meta.json":  # still valid JSON, one value changed
        meta = json.loads((folder / name).read_text())
        meta["pad_id"] += 1
        (folder / name).write_text(json.dumps(meta, indent=1))
    else:
        _flip_a_bit(folder / name)
    lines: list[str] = []
    assert cached(folder, log=lines.append) is None
    assert lines == [f"warning: prepared-study cache {folder}: {name} is corrupt (its SHA-256 differs from the one "
                     "stored); preparing the study again"]


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_cache_without_checksums_is_not_trusted(original, cache: Path) -> None:
    folder = cache / original.fingerprint
    (folder / MANIFEST).unlink()  # as an older version wrote it
    lines: list[str] = []
    assert cached(folder, log=lines.append) is None
    assert lines == [f"warning: prepared-study cache {folder}: has no {MANIFEST} (written without checksums); "
                     "preparing the study again"]
    with pytest.raises(CorruptCache, match="has no manifest.json"):
        load_cached(folder)


def test_a_missing_file_is_reported_by_name(original, cache: Path) -> None:
    folder = cache / original.fingerprint
    (folder / "splits.npz").unlink()
    with pytest.raises(CorruptCache, match="splits.npz is missing"):
        load_cached(folder)


def test_an_absent_cache_is_silent(tmp_path: Path) -> None:
    lines: list[str] = []
    assert cached(tmp_path / "nothing-here", log=lines.append) is None
    assert lines == [] and not (tmp_path / "nothing-here").exists()


def test_run_rebuilds_a_corrupt_cache_and_completes_its_trials(study_file, original, cache: Path) -> None:
    """The driver's own path: the warning, a fresh teacher equal to the original, a COMPLETE trial."""
    folder = cache / original.fingerprint
    _flip_a_weight_bit(folder / "teacher.safetensors")
    lines: list[str] = []
    url = f"sqlite:///{cache / 'study.db'}"
    options = RunOptions(storage=url, cache_dir=cache, artifact_dir=cache / "artifacts", log=lines.append,
                         executor=InProcessExecutor(threads=1))
    study = driver.run_study(study_file, options)
    assert [line for line in lines if line.startswith("warning: prepared-study cache")] == [  # one, not per trial
        f"warning: prepared-study cache {folder}: teacher.safetensors is corrupt (its SHA-256 differs from the one "
        "stored); preparing the study again"]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    _assert_same_teacher(load_cached(folder), original)
