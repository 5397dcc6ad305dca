"""Work done once per study and reused by every trial.

The tokenized splits, the dense teacher fine-tuned on the task, its logits on every split (the
training-set logits drive distillation; the validation/test logits are the dense reference for
compression-specific bias measures) are computed once, stored under
``studies/cache/<fingerprint>/`` and loaded again by any study with the same fingerprint. The
fingerprint covers the model, the data settings, the teacher's training settings, the seed and the
``[bias]`` settings, so changing any of them can never reuse a stale teacher. Every cached file's
SHA-256 is kept in the entry's manifest and checked on each load, so a truncated or altered file (a
full disk, a bad copy, a flipped bit) is prepared again rather than crashing or silently changing
the teacher every trial compresses.

With ``[bias]`` settings (:mod:`fairfront.objectives.measures.bias_settings`) the preparation also trains
the dense population (:mod:`fairfront.objectives.training.population`: ``dense_population`` extra models,
the teacher being the first member, whose validation/test predictions are kept) and builds the
tokenized counterfactual validation/test texts of each swap list
(:mod:`fairfront.objectives.measures.counterfactual_sets`), with the teacher's logits on them.

With ``[bias] intrinsic`` the preparation also loads each benchmark's validation and test halves
(:mod:`fairfront.objectives.measures.intrinsic.halves`), keeps the checkpoint's masked-LM head (config and
weights, so workers never read the model folder) and scores the dense teacher on both halves.

A ``masked_lm`` study (``[model] task = "masked_lm"``) has no data and trains nothing: its
"teacher" is the pretrained masked LM itself (weights cached like a teacher), and its prepared
study holds the benchmarks' halves and the dense model's scores on both, so reports can compare
compressed and dense.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fairfront.errors import DataError
from fairfront.objectives.data.datasets import TextDataset
from fairfront.objectives.data.task import SPLITS, DataSpec, EncodedSplit, encode_splits, load_task
from fairfront.objectives.measures.bias_settings import BiasSettings
from fairfront.objectives.measures.counterfactual_sets import SwappedTexts, build_swapped_texts
from fairfront.objectives.training.loop import TrainSettings, TrainStats, predict_logits, train
from fairfront.objectives.training.masked_lm import (
    attach_masked_lm_head,
    load_masked_lm,
    masked_lm_from_state,
    masked_lm_head_state,
)
from fairfront.objectives.training.models import ModelSpec, classifier_from_state, load_tokenizer, new_classifier
from fairfront.objectives.training.population import POPULATION_SPLITS, DensePopulation, train_population
from fairfront.objectives.training.teacher_settings import teacher_loss

__all__ = ["PrepareSpec", "Prepared", "prepare", "cached", "load_cached", "store", "CorruptCache", "verify",
           "CACHE_FORMAT", "MANIFEST"]

CACHE_FORMAT = 4
"""Layout version of a cached prepared study; part of the fingerprint, and checked when a cache is read.

2: the dense population and the counterfactual sets (``[bias]``) are stored.
3: the task (``classification`` / ``masked_lm``), the tokenizer (``tokenizer/``), the masked-LM head
   (``mlm_head.safetensors``) and the dense model's intrinsic scores (``meta.json``) are stored.
4: SEAT halves are split by word across every test (no sentence in both halves) and the dense
   model's intrinsic scores are float32 unless ``[bias] intrinsic_bf16`` asks for bf16.
"""

MANIFEST = "manifest.json"
"""The SHA-256 of every other file of a cached prepared study, written last (the folder is renamed into
place whole), checked on every load."""


class CorruptCache(DataError):
    """A cached prepared study that cannot be trusted: a file is missing, truncated or altered, it has no
    checksums (written by an older version), or another layout. It is prepared again, never used."""

    def __init__(self, folder: Path, reason: str, file: str | None = None):
        self.folder = Path(folder)
        self.file = file
        super().__init__(f"prepared-study cache {folder}: {reason}")


@dataclass(frozen=True)
class PrepareSpec:
    model: ModelSpec
    data: DataSpec | None  # None in a masked_lm study
    teacher: TrainSettings
    seed: int = 0
    bias: BiasSettings = BiasSettings()

    def fingerprint(self) -> str:
        data = None if self.data is None else self.data.identity()
        teacher = dataclasses.asdict(self.teacher)
        if teacher.get("loss", "cross_entropy") == "cross_entropy":  # the fingerprint of studies before the key
            teacher.pop("loss", None)
            teacher.pop("loss_parameter", None)
        payload = json.dumps({"format": CACHE_FORMAT, "model": self.model.identity(),
                              "model_spec": dataclasses.asdict(self.model), "data": data,
                              "teacher": teacher, "seed": self.seed,
                              "bias": self.bias.identity()},
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
    population: DensePopulation | None = None
    counterfactuals: dict[str, list[SwappedTexts]] = field(default_factory=dict)
    task: str = "classification"
    tokenizer: Any = None
    """The model's tokenizer, kept only where trials score intrinsic benchmarks (else None)."""
    intrinsic: dict = field(default_factory=dict)
    """``{"names", "limit", "data_dir", "batch_size", "bf16"}`` of ``[bias] intrinsic`` (empty: none)."""
    intrinsic_halves: dict[str, dict[str, list]] = field(default_factory=dict)
    intrinsic_dense: dict[str, dict[str, dict]] = field(default_factory=dict)
    """The dense model's results ``{benchmark: {"validation": ..., "test": ...}}``."""
    mlm_head: tuple[dict, dict[str, torch.Tensor]] | None = None
    """A classification study's masked-LM head: (masked-LM config dict, head weights)."""
    positive_label: str | None = None
    """The positive class of a binary task (``[data] positive_label``); None: class 1, as caches before it."""

    @property
    def positive_index(self) -> int | None:
        """The positive class id of a binary task, None for a multi-class one."""
        if len(self.label_names) != 2:
            return None
        return self.label_names.index(self.positive_label) if self.positive_label in self.label_names else 1

    def teacher(self) -> torch.nn.Module:
        """A fresh copy of the dense teacher (each trial compresses its own copy); the masked LM in a
        ``masked_lm`` study."""
        if self.task == "masked_lm":
            return masked_lm_from_state(dict(self.model_config), self.teacher_state)
        return classifier_from_state(dict(self.model_config), self.teacher_state)

    def masked_lm(self, compressed: torch.nn.Module) -> torch.nn.Module:
        """``compressed`` with the checkpoint's masked-LM head on its (shared) encoder."""
        if self.task == "masked_lm":
            return compressed
        if self.mlm_head is None:
            raise ValueError("this prepared study has no masked-LM head (no masked-LM benchmark in [bias] intrinsic)")
        config, state = self.mlm_head
        return attach_masked_lm_head(compressed, config=dict(config), head_state=state)

    def dense_predictions(self, split: str) -> np.ndarray:
        return self.teacher_logits[split].argmax(axis=1)

    def population_predictions(self, split: str) -> np.ndarray | None:
        """The dense population's predictions ``[n_members, n_examples]`` (teacher first), or None."""
        return None if self.population is None else self.population.predictions[split]


def prepare(spec: PrepareSpec, cache_root: Path, *, log: Callable[[str], None] = print,
            device: torch.device | None = None) -> Prepared:
    """Load the prepared study from the cache, or compute and store it."""
    fingerprint = spec.fingerprint()
    folder = Path(cache_root) / fingerprint
    found = cached(folder, log=log)
    if found is not None:
        return found
    prepared = compute(spec, log=log, device=device)
    store(prepared, folder)
    log(f"prepared study cached in {folder}")
    return prepared


def _warn_degenerate(pred: np.ndarray, y: np.ndarray, label_names, log: Callable[[str], None]) -> None:
    """Say so when the teacher is useless: every trial would inherit it and look perfectly fair."""
    from fairfront.objectives.measures.scoring import degeneracy

    found = degeneracy(y, pred)
    if not found["flagged"]:
        return
    what = (f"predicts only class {label_names[int(pred[0])]!r}" if found["one_class"]
            else f"has balanced accuracy {found['balanced_accuracy']:.3f}, near chance ({found['chance']:.3f})")
    log(f"warning: the dense teacher {what} on the validation split; its trials measure no real bias. "
        f"Train it longer ([teacher] epochs) or with a class-imbalance loss ([teacher] loss = \"class_balanced\")")


def compute(spec: PrepareSpec, *, log: Callable[[str], None] = print,
            device: torch.device | None = None) -> Prepared:
    """Tokenize, fine-tune the dense teacher, and compute its logits on every split.

    With ``spec.bias``: build the counterfactual validation/test sets (with the teacher's logits
    on them) and fine-tune the dense population (same settings as the teacher, seeds
    ``seed + 1 ... seed + N``), logging one line per member.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.model.task == "masked_lm":
        return _compute_masked_lm(spec, log=log, device=device)
    data = load_task(spec.data)
    fit = _DenseFit.of(spec, data, device, log)
    model, stats, logits = _train_teacher(fit, log)
    _warn_degenerate(logits["validation"].argmax(1), fit.splits["validation"].labels, data.label_names, log)
    config = model.config.to_dict()
    config["num_labels"] = fit.num_labels
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    counterfactuals = _counterfactual_sets(data, fit, model, log)
    intrinsic, halves, head = _intrinsic_setup(spec, log)
    dense = {}
    if halves:
        mlm = attach_masked_lm_head(model, config=head[0], head_state=head[1]) if head is not None else None
        dense = _score_dense(halves, model, mlm, fit.tokenizer, intrinsic, device, log)
        del mlm
    del model
    population = _dense_population(fit, logits, log)
    return Prepared(spec.fingerprint(), data.name, data.citation, tuple(data.label_names), tuple(data.group_names),
                    bool(data.group_is_proxy), fit.splits, int(fit.tokenizer.pad_token_id), config, state, logits,
                    stats.seconds, population, counterfactuals,
                    tokenizer=fit.tokenizer if intrinsic else None,  # only the intrinsic benchmarks read it in a trial
                    intrinsic=intrinsic,
                    intrinsic_halves=halves, intrinsic_dense=dense, mlm_head=head,
                    positive_label=data.positive_label)


def _split_texts(data: TextDataset, split: str) -> list[str]:
    return data.frame.loc[data.frame["split"] == split, "text"].astype(str).tolist()


@dataclass
class _DenseFit:
    """How every dense classifier of a study is fine-tuned and read: the teacher and each population member."""

    spec: PrepareSpec
    splits: dict[str, EncodedSplit]
    tokenizer: Any
    device: torch.device
    num_labels: int
    per_example: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @classmethod
    def of(cls, spec: PrepareSpec, data: TextDataset, device: torch.device, log: Callable[[str], None]) -> _DenseFit:
        """Tokenize the task's splits (logging their sizes) and set up the teacher's loss on its class counts."""
        tokenizer = load_tokenizer(spec.model, _split_texts(data, "train"))
        splits = encode_splits(data, tokenizer, max_length=spec.model.max_length)
        counts = ", ".join(f"{s} {len(splits[s])}" for s in SPLITS)
        log(f"data {data.name}: {counts}; {len(data.label_names)} classes, {len(data.group_names)} groups")
        n_labels = len(data.label_names)
        per_example = teacher_loss(spec.teacher, np.bincount(splits["train"].labels, minlength=n_labels))
        return cls(spec, splits, tokenizer, device, n_labels, per_example)

    @property
    def total_steps(self) -> int:
        return self.spec.teacher.total_steps(len(self.splits["train"]))

    def fine_tune(self, seed: int, progress: Callable[[int, int, float], None] | None = None
                  ) -> tuple[torch.nn.Module, TrainStats]:
        net = new_classifier(self.spec.model, num_labels=self.num_labels, vocab_size=len(self.tokenizer), seed=seed)
        stats = train(net, self.splits["train"], self.spec.teacher,
                      loss_fn=lambda logits, batch: self.per_example(logits, batch["labels"]).mean(),
                      seed=seed, pad_id=self.tokenizer.pad_token_id, device=self.device, progress=progress)
        return net, stats

    def logits_of(self, net: torch.nn.Module, split: EncodedSplit) -> np.ndarray:
        return predict_logits(net, split, batch_size=self.spec.teacher.eval_batch_size,
                              pad_id=self.tokenizer.pad_token_id, device=self.device)


def _train_teacher(fit: _DenseFit, log: Callable[[str], None]
                   ) -> tuple[torch.nn.Module, TrainStats, dict[str, np.ndarray]]:
    """Fine-tune the dense teacher (logging a tenth of its steps) and read its logits on every split."""
    total = fit.total_steps
    log(f"fine-tuning the dense teacher ({fit.spec.model.name}) for {total} steps on {fit.device.type}")
    every = max(1, total // 10)

    def progress(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            log(f"  teacher step {step}/{steps} loss {loss:.4f}")

    model, stats = fit.fine_tune(fit.spec.seed, progress)
    logits = {s: fit.logits_of(model, fit.splits[s]) for s in SPLITS}
    accuracy = float((logits["validation"].argmax(1) == fit.splits["validation"].labels).mean())
    log(f"teacher trained in {stats.seconds:.0f}s; validation accuracy {accuracy:.4f}")
    return model, stats, logits


def _counterfactual_sets(data: TextDataset, fit: _DenseFit, model: torch.nn.Module,
                         log: Callable[[str], None]) -> dict[str, list[SwappedTexts]]:
    """``[bias] counterfactual``: each swap list's changed texts per split, with the teacher's logits on them."""
    counterfactuals: dict[str, list[SwappedTexts]] = {}
    for swap_list in fit.spec.bias.counterfactual:
        for s in POPULATION_SPLITS:
            swapped = build_swapped_texts(_split_texts(data, s), fit.splits[s], swap_list, fit.tokenizer,
                                          max_length=fit.spec.model.max_length)
            swapped.dense_logits = fit.logits_of(model, swapped.encoded)
            counterfactuals.setdefault(s, []).append(swapped)
        changed = ", ".join(f"{s} {len(counterfactuals[s][-1])}/{len(fit.splits[s])}" for s in POPULATION_SPLITS)
        log(f"counterfactual swap list {swap_list.name}: texts changed {changed}")
        if len(counterfactuals["validation"][-1]) == 0:
            log(f"  warning: swap list {swap_list.name} changes no validation text; its counterfactual measures "
                "are undefined")
    return counterfactuals


def _dense_population(fit: _DenseFit, teacher_logits: dict[str, np.ndarray],
                      log: Callable[[str], None]) -> DensePopulation | None:
    """``[bias] dense_population``: that many more dense models, fine-tuned like the teacher on the next seeds."""
    n = fit.spec.bias.dense_population
    if n <= 0:
        return None
    log(f"fine-tuning a dense population of {n} more models (the teacher is member 0), {fit.total_steps} steps each")

    def member(seed: int) -> dict[str, np.ndarray]:
        net, _ = fit.fine_tune(seed)
        return {s: fit.logits_of(net, fit.splits[s]) for s in POPULATION_SPLITS}

    population = train_population(n, seed=fit.spec.seed, teacher_logits=teacher_logits,
                                  labels={s: fit.splits[s].labels for s in POPULATION_SPLITS}, fit=member, log=log)
    log(f"dense population trained in {population.seconds:.0f}s; validation accuracies "
        + ", ".join(f"{a:.4f}" for a in population.accuracies["validation"]))
    return population


def _intrinsic_setup(spec: PrepareSpec, log: Callable[[str], None]):
    """``[bias] intrinsic``: the settings, the benchmarks' halves, and the checkpoint's masked-LM head."""
    b = spec.bias
    if not b.intrinsic:
        return {}, {}, None
    from fairfront.objectives.measures.intrinsic import INTRINSIC_BENCHMARKS
    from fairfront.objectives.measures.intrinsic.halves import load_halves

    settings = {"names": list(b.intrinsic), "limit": b.intrinsic_limit, "data_dir": b.intrinsic_data_dir,
                "batch_size": b.intrinsic_batch_size, "bf16": b.intrinsic_bf16}
    halves = load_halves(b.intrinsic, data_dir=b.intrinsic_data_dir)
    log("intrinsic benchmarks: " + "; ".join(f"{n} validation {len(h['validation'])}, test {len(h['test'])}"
                                             for n, h in halves.items())
        + (f" (first {b.intrinsic_limit} items of each half scored)" if b.intrinsic_limit else ""))
    head = None
    if spec.model.task != "masked_lm" and any(INTRINSIC_BENCHMARKS[n].needs == "masked_lm" for n in b.intrinsic):
        mlm = load_masked_lm(spec.model.source)
        config = mlm.config.to_dict()
        head = (config, masked_lm_head_state(mlm))
        del mlm
    return settings, halves, head


def _score_dense(halves: dict, encoder: torch.nn.Module, mlm: torch.nn.Module | None, tokenizer, intrinsic: dict,
                 device: torch.device, log: Callable[[str], None]) -> dict:
    from fairfront.objectives.measures.intrinsic.halves import headline_biases, score_halves

    started = time.perf_counter()
    scores = score_halves(lambda needs: mlm if needs == "masked_lm" else encoder, tokenizer, halves,
                          limit=intrinsic["limit"], batch_size=intrinsic["batch_size"], device=device,
                          bf16=intrinsic.get("bf16", False))
    shown = ", ".join(f"{n} {v:.3f}" if v is not None else f"{n} undefined"
                      for n, v in headline_biases(scores, "validation").items())
    log(f"dense intrinsic bias (validation half, |headline - ideal|): {shown} "
        f"({time.perf_counter() - started:.0f}s)")
    return scores


def _compute_masked_lm(spec: PrepareSpec, *, log: Callable[[str], None], device: torch.device) -> Prepared:
    """A masked_lm study: the pretrained masked LM is the dense model; score it on both halves."""
    tokenizer = load_tokenizer(spec.model, [])
    log(f"loading the pretrained masked LM {spec.model.name}")
    mlm = load_masked_lm(spec.model.source).to(device)
    intrinsic, halves, _ = _intrinsic_setup(spec, log)
    dense = _score_dense(halves, mlm, mlm, tokenizer, intrinsic, device, log)
    config = mlm.config.to_dict()
    state = {k: v.detach().cpu().clone().contiguous() for k, v in mlm.state_dict().items()}
    names = ", ".join(intrinsic["names"])
    return Prepared(spec.fingerprint(), f"intrinsic: {names}", "", (), (), False, {}, int(tokenizer.pad_token_id),
                    config, state, {}, 0.0, task="masked_lm", tokenizer=tokenizer, intrinsic=intrinsic,
                    intrinsic_halves=halves, intrinsic_dense=dense)


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
            if split.membership is not None:
                arrays[f"{name}.membership"] = split.membership
            arrays[f"{name}.teacher_logits"] = prepared.teacher_logits[name]
        meta = {k: getattr(prepared, k) for k in ("fingerprint", "data_name", "citation", "label_names",
                                                   "group_names", "group_is_proxy", "pad_id", "model_config",
                                                   "teacher_seconds")}
        meta["format"] = CACHE_FORMAT
        meta["task"] = prepared.task
        meta["intrinsic"] = prepared.intrinsic
        meta["intrinsic_dense"] = prepared.intrinsic_dense
        meta["positive_label"] = prepared.positive_label
        if prepared.tokenizer is not None:
            prepared.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if prepared.mlm_head is not None:
            meta["mlm_config"] = prepared.mlm_head[0]
            save_file(prepared.mlm_head[1], str(tmp / "mlm_head.safetensors"))
        pop = prepared.population
        if pop is not None:
            for name, predictions in pop.predictions.items():
                arrays[f"population.{name}"] = predictions
            meta["population"] = {"seeds": list(pop.seeds), "accuracies": pop.accuracies, "seconds": pop.seconds}
        meta["counterfactual"] = {}
        for name, sets in prepared.counterfactuals.items():
            meta["counterfactual"][name] = [s.list_name for s in sets]
            for i, swapped in enumerate(sets):
                key = f"counterfactual.{name}.{i}"
                arrays[f"{key}.ids"] = np.concatenate(swapped.encoded.input_ids or [np.zeros(0, np.int64)])
                arrays[f"{key}.offsets"] = np.cumsum([0] + [len(x) for x in swapped.encoded.input_ids])
                arrays[f"{key}.index"] = swapped.index
                arrays[f"{key}.dense_logits"] = swapped.dense_logits
        np.savez(tmp / "splits.npz", **arrays)
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        _write_manifest(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _ragged(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [ids[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    """The checksum of every file in ``folder`` (flushed to disk first), in :data:`MANIFEST`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    checksums = {p.relative_to(folder).as_posix(): _sha256(p) for p in files}
    manifest = folder / MANIFEST
    manifest.write_text(json.dumps({"format": CACHE_FORMAT, "sha256": checksums}, indent=1, sort_keys=True))
    with open(manifest, "rb") as f:
        os.fsync(f.fileno())


def verify(folder: Path) -> dict:
    """Check a cached prepared study against its manifest; returns its ``meta.json``.

    Raises:
        CorruptCache: a file is missing or its bytes are not those written, the manifest is
            missing (an older version wrote no checksums), or the layout is another one.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise CorruptCache(folder, f"meta.json cannot be read ({type(err).__name__})", "meta.json") from None
    if not isinstance(meta, dict) or meta.get("format", 1) != CACHE_FORMAT:
        layout = meta.get("format", 1) if isinstance(meta, dict) else "unknown"
        raise CorruptCache(folder, f"has layout {layout}, this version reads {CACHE_FORMAT}", "meta.json")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        checksums = manifest["sha256"]
        if not isinstance(checksums, dict) or "meta.json" not in checksums:
            raise ValueError(MANIFEST)
    except FileNotFoundError:
        raise CorruptCache(folder, f"has no {MANIFEST} (written without checksums)", MANIFEST) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptCache(folder, f"{MANIFEST} cannot be read ({type(err).__name__})", MANIFEST) from None
    for name, expected in sorted(checksums.items()):
        path = folder / name
        if not path.is_file():
            raise CorruptCache(folder, f"{name} is missing", name)
        if _sha256(path) != expected:
            raise CorruptCache(folder, f"{name} is corrupt (its SHA-256 differs from the one stored)", name)
    return meta


def cached(folder: Path, *, log: Callable[[str], None] = print) -> Prepared | None:
    """The prepared study cached in ``folder`` if it is there and intact, else None.

    A corrupt or untrusted entry is reported in one warning line naming the file and left for the
    caller to prepare again (:func:`store` replaces the folder).
    """
    folder = Path(folder)
    if not folder.exists():
        return None
    try:
        prepared = load_cached(folder)
    except CorruptCache as err:
        log(f"warning: {err}; preparing the study again")
        return None
    log(f"prepared study found in cache {folder}")
    return prepared


def load_cached(folder: Path) -> Prepared:
    """Read a prepared study written by :func:`store`, after checking every file's SHA-256.

    Raises:
        CorruptCache: (a :class:`DataError`) the cache cannot be trusted (:func:`verify`).
    """
    meta = verify(folder)
    arrays = np.load(Path(folder) / "splits.npz")
    splits, logits = {}, {}
    task = meta.get("task", "classification")
    for name in (SPLITS if task == "classification" else ()):
        member = arrays[f"{name}.membership"] if f"{name}.membership" in arrays.files else None
        splits[name] = EncodedSplit(_ragged(arrays[f"{name}.ids"], arrays[f"{name}.offsets"]),
                                    arrays[f"{name}.labels"], arrays[f"{name}.groups"], member)
        logits[name] = arrays[f"{name}.teacher_logits"]
    population = None
    if "population" in meta:
        pop = meta["population"]
        population = DensePopulation(tuple(pop["seeds"]), {s: arrays[f"population.{s}"] for s in POPULATION_SPLITS},
                                     {s: list(v) for s, v in pop["accuracies"].items()}, pop["seconds"])
    counterfactuals: dict[str, list[SwappedTexts]] = {}
    for name, list_names in meta.get("counterfactual", {}).items():
        for i, list_name in enumerate(list_names):
            key = f"counterfactual.{name}.{i}"
            index = arrays[f"{key}.index"]
            encoded = splits[name].subset(index, _ragged(arrays[f"{key}.ids"], arrays[f"{key}.offsets"]))
            counterfactuals.setdefault(name, []).append(
                SwappedTexts(list_name, index, encoded, arrays[f"{key}.dense_logits"]))
    state = load_file(str(Path(folder) / "teacher.safetensors"))
    tokenizer = None
    if (Path(folder) / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(Path(folder) / "tokenizer"))
    head = None
    if "mlm_config" in meta:
        head = (meta["mlm_config"], load_file(str(Path(folder) / "mlm_head.safetensors")))
    intrinsic = meta.get("intrinsic") or {}
    halves = {}
    if intrinsic:
        from fairfront.objectives.measures.intrinsic.halves import load_halves

        halves = load_halves(intrinsic["names"], data_dir=intrinsic["data_dir"])  # deterministic: same halves
    return Prepared(meta["fingerprint"], meta["data_name"], meta["citation"], tuple(meta["label_names"]),
                    tuple(meta["group_names"]), meta["group_is_proxy"], splits, meta["pad_id"], meta["model_config"],
                    state, logits, meta["teacher_seconds"], population, counterfactuals, task=task,
                    tokenizer=tokenizer, intrinsic=intrinsic, intrinsic_halves=halves,
                    intrinsic_dense=meta.get("intrinsic_dense") or {}, mlm_head=head,
                    positive_label=meta.get("positive_label"))
