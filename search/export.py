"""``fairfront export``: one trial's compressed model, made again, as a folder plain transformers loads.

A trial keeps its measures, not its weights (a study of hundreds of trials would otherwise keep
hundreds of models). Its weights are made again instead: the teacher from the study's prepared
cache (prepared again here if the cache is gone), the trial's compression config re-sampled
from its stored parameters, its seed, batch size, device and torch threads, and the same code
path a trial runs (:func:`~fairfront.objectives.training.trial.compress`), so the numbers are the
trial's. The validation accuracy is measured again and compared with the stored one.

The folder (``config.json``, ``model.safetensors``, the tokenizer, a model card ``README.md``)
loads with ``AutoModelForSequenceClassification.from_pretrained`` and ``AutoTokenizer.from_pretrained``
without fairfront. What that cannot express is refused before anything is computed or written:

- pruned weights are written as the zeros they are;
- dropped layers are a shallower config (``num_hidden_layers``);
- feed-forward layers made narrower by structured pruning load only when every layer kept the same
  width (it becomes ``intermediate_size``): transformers builds every layer from one config;
- removed attention heads do not load at all: transformers sizes a head as
  ``hidden_size / num_attention_heads`` and no longer reads ``pruned_heads``;
- an int8 trial is written as its float weights (the model before int8 conversion), and the card
  says that its measures were taken on the int8 model.

The folder is written beside ``--out`` under a temporary name, loaded back with plain
``from_pretrained`` and compared with the model, then renamed into place: a failed export leaves no
half folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from fairfront.errors import ConfigError, DataError
from fairfront.jsonsafe import json_safe
from fairfront.objectives.training.prepare import Prepared, cached, compute, store
from fairfront.objectives.training.trial import TrialSpec, compress
from fairfront.search.attrs import STUDY_FILE_ATTR, stored_record
from fairfront.search.model_card import model_card
from fairfront.search.studyfile import StudyFile, parse_study_text
from fairfront.spaces.space import CompressionConfig

__all__ = ["Exported", "Remade", "export_trial", "prepared_study", "remake", "stored_study_file", "complete_trial"]


@dataclass(frozen=True)
class Exported:
    """What :func:`export_trial` wrote, and the validation accuracy it measured on the written model."""

    folder: Path
    accuracy: float
    stored_accuracy: float | None


@dataclass(frozen=True)
class Remade:
    """What a COMPLETE trial's model is made again from: its config and spec, the prepared study, its device."""

    config: CompressionConfig
    spec: TrialSpec
    prepared: Prepared
    device: torch.device
    threads: int | None

    def model(self) -> Any:
        """The trial's compressed model, on the CPU, in eval mode (through the trial's own code path)."""
        return compress(self.prepared, self.spec, device=self.device, threads=self.threads).model.cpu().eval()


def remake(study: optuna.Study, sf: StudyFile, trial: FrozenTrial, cache_dir: Path,
           log: Callable[[str], None], prepared: Prepared | None = None) -> Remade:
    """Everything :meth:`Remade.model` needs to make ``trial``'s model again (the prepared study loaded or
    prepared again); the trial's parameters must still give its stored compression config."""
    number = trial.number
    record = stored_record(trial)
    config = sf.space.sample(optuna.trial.FixedTrial(trial.params))
    stored = record.get("compression")
    if stored is not None and json_safe(config.as_dict()) != stored:
        raise DataError(f"trial {number}'s parameters no longer give its stored compression config ({stored}); "
                        "the study's compression families have changed since it ran")
    spec = sf.trial_spec(config, number)
    batch_size = record.get("student_batch_size")
    if isinstance(batch_size, int) and batch_size != spec.student.batch_size:  # halved after a CUDA OOM
        spec = replace(spec, student=replace(spec.student, batch_size=batch_size))
    prepared = prepared or prepared_study(sf, study, cache_dir, log)
    device, threads = _where(record.get("timings") or {}, log)
    log(f"making trial {number} of {study.study_name!r} again ({', '.join(config.names)}; seed {spec.seed}, "
        f"{device.type}" + (f", {threads} torch threads)" if threads else ")"))
    return Remade(config, spec, prepared, device, threads)


def export_trial(name: str, number: int, out: Path, *, storage: str, cache_dir: Path,
                 log: Callable[[str], None] = print) -> Exported:
    """Make trial ``number`` of study ``name`` again and write it to ``out``.

    Raises:
        ConfigError: the study, the trial or ``out`` is not acceptable, or the trial's model has a
            shape plain ``from_pretrained`` cannot load (nothing is written then).
    """
    from fairfront.search.driver import load_study

    out = Path(out)
    _check_out(out)
    study = load_study(name, storage)
    sf = stored_study_file(study)
    trial = complete_trial(study, number)
    if sf.model.task == "masked_lm":
        raise ConfigError("--trial", message=f"study {name!r} compresses a masked LM ([model] task = \"masked_lm\"); "
                          "export writes sequence classifiers only")
    record = stored_record(trial)
    _check_loadable(record.get("structured"), number)
    made = remake(study, sf, trial, cache_dir, log)
    config, spec, prepared, device = made.config, made.spec, made.prepared, made.device
    started = time.perf_counter()
    model: Any = made.model()
    _plain_config(model, prepared, number)
    int8 = bool(config.quantization is not None and config.quantization.int8)
    tokenizer = _tokenizer(sf, prepared)
    validation = record.get("validation") or {}
    stored_accuracy = (validation.get("accuracy") or {}).get("accuracy")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _quiet_transformers()
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        loaded = _load_back(tmp, model)
        accuracy = _validation_accuracy(loaded, prepared, spec.student.eval_batch_size, device)
        (tmp / "README.md").write_text(model_card(study=study, sf=sf, trial=trial, prepared=prepared,
                                                  accuracy=accuracy, int8=int8, folder=out), encoding="utf-8")
        _usual_permissions(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"trial {number} made again in {time.perf_counter() - started:.0f}s; validation accuracy {accuracy:.4f}"
        + _compared(accuracy, stored_accuracy, int8))
    log(f"wrote {out} (load it with transformers' AutoModelForSequenceClassification.from_pretrained)")
    return Exported(out, accuracy, stored_accuracy)


def _quiet_transformers() -> None:
    """Saving and loading progress bars say nothing the export's own lines do not."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _usual_permissions(folder: Path) -> None:
    """The modes a plain ``mkdir`` and ``open`` give (the temporary folder and some writers make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _check_out(out: Path) -> None:
    """A new folder, or an empty one: an export never mixes its files with others."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", str(out), "a folder that does not exist yet, or an empty one")


def stored_study_file(study: optuna.Study) -> StudyFile:
    """The study file a fairfront study stored when it was created (refused for any other study)."""
    text = study.user_attrs.get(STUDY_FILE_ATTR)
    if text is None:
        raise ConfigError("study", study.study_name, "a study created by fairfront (it has no stored study file)")
    return parse_study_text(text, base_dir=Path.cwd())


def complete_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number``, refused (listing the COMPLETE ones) unless it exists and is COMPLETE."""
    trials = study.get_trials(deepcopy=False)
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    listed = _numbers(complete)
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        raise ConfigError("--trial", number, f"a COMPLETE trial of study {study.study_name!r} ({listed})")
    if found.state != TrialState.COMPLETE:
        reason = found.user_attrs.get("fail_reason")
        state = found.state.name + (f": {reason}" if reason else "")
        raise ConfigError("--trial", number, f"a COMPLETE trial (trial {number} is {state}; {listed})")
    return found


def _numbers(numbers: list[int]) -> str:
    if not numbers:
        return "it has none yet"
    shown = ", ".join(str(n) for n in numbers[:20])
    return "COMPLETE: " + shown + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")


def _check_loadable(structured: dict[str, Any] | None, number: int) -> None:
    """Refuse, from the trial's stored summary, a shape plain ``from_pretrained`` cannot build."""
    if not structured:
        return
    removed = {layer: heads for layer, heads in (structured.get("heads_removed") or {}).items() if heads}
    if removed:
        _refuse_heads(number, f"removed heads {removed}")
    _uniform_width(structured.get("intermediate_sizes") or [], number)


def _refuse_heads(number: int, what: str) -> NoReturn:
    raise ConfigError("--trial", number, f"a trial without removed attention heads (trial {number}'s structured "
                      f"pruning {what}; transformers sizes every head as hidden_size / num_attention_heads and no "
                      "longer reads pruned_heads, so plain from_pretrained cannot load it)")


def _uniform_width(widths: list[int], number: int) -> int | None:
    if len(set(widths)) > 1:
        raise ConfigError("--trial", number, f"a trial whose feed-forward layers all have one width (trial {number}'s "
                          f"structured pruning left widths {widths}; transformers builds every layer with the "
                          "config's one intermediate_size, so plain from_pretrained cannot load it)")
    return widths[0] if widths else None


def prepared_study(sf: StudyFile, study: optuna.Study, cache_dir: Path, log: Callable[[str], None]) -> Prepared:
    """The study's teacher and data from the cache, or prepared again in this process (and cached)."""
    spec = sf.prepare_spec
    fingerprint = spec.fingerprint()
    ran_with = study.user_attrs.get("fairfront.prepared")
    if ran_with is not None and ran_with != fingerprint:
        log(f"warning: the study ran on prepared study {ran_with}, its model or data now give {fingerprint} (a data "
            "file or model folder changed?); the model made again may differ from the trial's")
    folder = Path(cache_dir) / fingerprint
    found = cached(folder, log=log)
    if found is not None:
        return found
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # the CPUs `run` gives its preparation task (floating point depends on the thread count)
    threads = max(1, min(os.cpu_count() or 1, round(sf.execution.cpus_per_trial * sf.execution.parallel)))
    log(f"the prepared study is not in {cache_dir}: preparing it again in this process (data, dense teacher, "
        f"teacher logits) on {device.type}" + (f" with {threads} torch threads" if device.type == "cpu" else ""))
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        prepared = compute(spec, device=device, log=log)
    finally:
        torch.set_num_threads(before)
    store(prepared, folder)
    log(f"prepared study cached in {folder}")
    return prepared


def _where(timings: dict[str, Any], log: Callable[[str], None]) -> tuple[torch.device, int | None]:
    """The device type and torch threads the trial ran with (floating point depends on both)."""
    kind = timings.get("device") or "cpu"
    threads = timings.get("torch_threads") if isinstance(timings.get("torch_threads"), int) else None
    if kind == "cuda" and not torch.cuda.is_available():
        log("warning: the trial trained on a GPU and this machine has none; it is made again on the CPU, so its "
            "weights and measures may differ slightly")
        kind = "cpu"
    return torch.device(kind), (threads if kind == "cpu" else None)


def _plain_config(model: Any, prepared: Prepared, number: int) -> None:
    """The config ``from_pretrained`` needs to build this model: one layer width, named labels, no fairfront keys."""
    from fairfront.spaces.structured import SHAPE_KEY, layer_shapes

    shapes = layer_shapes(model)
    config = model.config
    if any(h != config.num_attention_heads for h in shapes["num_attention_heads"]):
        _refuse_heads(number, f"left {shapes['num_attention_heads']} heads per layer")
    width = _uniform_width(shapes["intermediate_size"], number)
    for cfg in {id(c): c for c in (config, getattr(model.base_model, "config", config))}.values():
        if hasattr(cfg, SHAPE_KEY):
            delattr(cfg, SHAPE_KEY)
        if width is not None:
            cfg.intermediate_size = width
    if prepared.label_names:
        config.id2label = dict(enumerate(prepared.label_names))
        config.label2id = {name: i for i, name in enumerate(prepared.label_names)}


def _tokenizer(sf: StudyFile, prepared: Prepared) -> Any:
    """The tokenizer the study encoded its texts with, truncating at the study's ``max_length``."""
    from fairfront.objectives.training.models import load_tokenizer

    tokenizer = prepared.tokenizer
    if tokenizer is None:
        texts: list[str] = []
        if sf.model.is_tiny and sf.data is not None:  # its vocabulary is the training texts' words
            from fairfront.objectives.data.task import load_task

            frame = load_task(sf.data).frame
            texts = frame.loc[frame["split"] == "train", "text"].astype(str).tolist()
        tokenizer = load_tokenizer(sf.model, texts)
    tokenizer.model_max_length = sf.model.max_length
    return tokenizer


def _load_back(folder: Path, model: torch.nn.Module) -> torch.nn.Module:
    """The written folder loaded as a user loads it; every weight must be the model's."""
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    expected = model.state_dict()
    got = loaded.state_dict()
    differ = sorted(k for k in expected if k not in got or not torch.equal(expected[k], got[k]))
    if differ or set(got) - set(expected):
        raise DataError(f"the written model does not load back as it was made ({(differ or sorted(got))[:3]}...)")
    return loaded


def _validation_accuracy(model: torch.nn.Module, prepared: Prepared, batch_size: int, device: torch.device) -> float:
    """Measured as the trial measured it (on its device), on the model loaded back from the folder."""
    from fairfront.objectives.training.loop import predict_logits

    split = prepared.splits["validation"]
    logits = predict_logits(model, split, batch_size=batch_size, pad_id=prepared.pad_id, device=device)
    model.cpu()
    return float((logits.argmax(axis=1) == split.labels).mean())


def _compared(accuracy: float, stored: float | None, int8: bool) -> str:
    if stored is None:
        return ""
    if int8:
        return f" (float weights; the stored {stored:.4f} was measured on the int8 model)"
    if accuracy == stored:
        return ", as stored"
    return f"\nwarning: the trial stored {stored:.4f}; the model made again differs"
