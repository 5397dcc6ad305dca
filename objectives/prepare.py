"""Work done once per study and reused by every trial.

The tokenized splits, the dense teacher fine-tuned on the task, its logits on every split (the
training-set logits drive distillation; the validation/test logits are the dense reference for
compression-specific bias measures) are computed once, stored under
``studies/cache/<fingerprint>/`` and loaded again by any study with the same fingerprint. The
fingerprint covers the model, the data settings, the teacher's training settings and the seed, so
changing any of them can never reuse a stale teacher.

A :class:`Prepared` holds everything in memory (weights as tensors, no paths), so the driver can
ship it to workers on other nodes through Ray's object store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from fairfront.objectives.data import SPLITS, DataSpec, EncodedSplit, encode_splits, load_task
from fairfront.objectives.models import ModelSpec, classifier_from_state, load_tokenizer, new_classifier
from fairfront.objectives.training import TrainSettings, predict_logits, train

__all__ = ["PrepareSpec", "Prepared", "prepare", "load_cached", "CACHE_FORMAT"]

CACHE_FORMAT = 1


@dataclass(frozen=True)
class PrepareSpec:
    model: ModelSpec
    data: DataSpec
    teacher: TrainSettings
    seed: int = 0

    def fingerprint(self) -> str:
        payload = json.dumps({"format": CACHE_FORMAT, "model": self.model.identity(),
                              "model_spec": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                              "teacher": dataclasses.asdict(self.teacher), "seed": self.seed},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Prepared:
    """Everything a trial needs, in memory."""

    fingerprint: str
    data_name: str
    citation: str
    label_names: tuple[str, ...]
    group_names: tuple[str, ...]
    group_is_proxy: bool
    splits: dict[str, EncodedSplit]
    pad_id: int
    model_config: dict
    teacher_state: dict[str, torch.Tensor]
    teacher_logits: dict[str, np.ndarray]
    teacher_seconds: float

    def teacher(self) -> torch.nn.Module:
        """A fresh copy of the dense teacher (each trial compresses its own copy)."""
        return classifier_from_state(dict(self.model_config), self.teacher_state)

    def dense_predictions(self, split: str) -> np.ndarray:
        return self.teacher_logits[split].argmax(axis=1)


def prepare(spec: PrepareSpec, cache_root: Path, *, log: Callable[[str], None] = print,
            device: torch.device | None = None) -> Prepared:
    """Load the prepared study from the cache, or compute and store it."""
    fingerprint = spec.fingerprint()
    folder = Path(cache_root) / fingerprint
    if (folder / "meta.json").is_file():
        log(f"prepared study found in cache {folder}")
        return load_cached(folder)
    prepared = compute(spec, log=log, device=device)
    store(prepared, folder)
    log(f"prepared study cached in {folder}")
    return prepared


def compute(spec: PrepareSpec, *, log: Callable[[str], None] = print,
            device: torch.device | None = None) -> Prepared:
    """Tokenize, fine-tune the dense teacher, and compute its logits on every split."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_task(spec.data)
    train_texts = data.frame.loc[data.frame["split"] == "train", "text"].astype(str).tolist()
    tokenizer = load_tokenizer(spec.model, train_texts)
    splits = encode_splits(data, tokenizer, max_length=spec.model.max_length)
    counts = ", ".join(f"{s} {len(splits[s])}" for s in SPLITS)
    log(f"data {data.name}: {counts}; {len(data.label_names)} classes, {len(data.group_names)} groups")
    model = new_classifier(spec.model, num_labels=len(data.label_names), vocab_size=len(tokenizer),
                           seed=spec.seed)
    total = spec.teacher.total_steps(len(splits["train"]))
    log(f"fine-tuning the dense teacher ({spec.model.name}) for {total} steps on {device.type}")
    every = max(1, total // 10)

    def progress(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            log(f"  teacher step {step}/{steps} loss {loss:.4f}")

    stats = train(model, splits["train"], spec.teacher,
                  loss_fn=lambda logits, batch: F.cross_entropy(logits, batch["labels"]),
                  seed=spec.seed, pad_id=tokenizer.pad_token_id, device=device, progress=progress)
    logits = {s: predict_logits(model, splits[s], batch_size=spec.teacher.eval_batch_size,
                                pad_id=tokenizer.pad_token_id, device=device) for s in SPLITS}
    accuracy = float((logits["validation"].argmax(1) == splits["validation"].labels).mean())
    log(f"teacher trained in {stats.seconds:.0f}s; validation accuracy {accuracy:.4f}")
    config = model.config.to_dict()
    config["num_labels"] = len(data.label_names)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    return Prepared(spec.fingerprint(), data.name, data.citation, tuple(data.label_names), tuple(data.group_names),
                    bool(data.group_is_proxy), splits, int(tokenizer.pad_token_id), config, state, logits,
                    stats.seconds)


def store(prepared: Prepared, folder: Path) -> None:
    """Write atomically: a temporary folder renamed into place, so a crash leaves no half cache."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        save_file(prepared.teacher_state, str(tmp / "teacher.safetensors"))
        arrays = {}
        for name, split in prepared.splits.items():
            arrays[f"{name}.ids"] = np.concatenate(split.input_ids)
            arrays[f"{name}.offsets"] = np.cumsum([0] + [len(x) for x in split.input_ids])
            arrays[f"{name}.labels"] = split.labels
            arrays[f"{name}.groups"] = split.groups
            arrays[f"{name}.teacher_logits"] = prepared.teacher_logits[name]
        np.savez(tmp / "splits.npz", **arrays)
        meta = {k: getattr(prepared, k) for k in ("fingerprint", "data_name", "citation", "label_names",
                                                   "group_names", "group_is_proxy", "pad_id", "model_config",
                                                   "teacher_seconds")}
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_cached(folder: Path) -> Prepared:
    meta = json.loads((Path(folder) / "meta.json").read_text())
    arrays = np.load(Path(folder) / "splits.npz")
    splits, logits = {}, {}
    for name in SPLITS:
        ids, offsets = arrays[f"{name}.ids"], arrays[f"{name}.offsets"]
        splits[name] = EncodedSplit([ids[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)],
                                    arrays[f"{name}.labels"], arrays[f"{name}.groups"])
        logits[name] = arrays[f"{name}.teacher_logits"]
    state = load_file(str(Path(folder) / "teacher.safetensors"))
    return Prepared(meta["fingerprint"], meta["data_name"], meta["citation"], tuple(meta["label_names"]),
                    tuple(meta["group_names"]), meta["group_is_proxy"], splits, meta["pad_id"], meta["model_config"],
                    state, logits, meta["teacher_seconds"])
