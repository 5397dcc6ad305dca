"""Intrinsic bias benchmarks for masked language models and encoders.

*Intrinsic* measures look at the language model itself rather than at a downstream classifier:
which of two sentences it finds more likely, which pronoun it expects, how close its sentence
embeddings of concepts lie. They tell whether compression changes the associations a model
has learned, independently of any task.

- :mod:`.stereoset`: StereoSet intrasentence SS / LMS / ICAT (Nadeem et al. 2021),
- :mod:`.crows_pairs`: the CrowS-Pairs pseudo-log-likelihood metric (Nangia et al. 2020),
- :mod:`.winobias`: a masked-pronoun probe on WinoBias sentences (Zhao et al. 2018),
- :mod:`.seat`: SEAT / WEAT effect sizes for encoders (May et al. 2019; Caliskan et al. 2017),
- :mod:`.mlm_scoring`: the batched engine the masked-LM benchmarks share.

The scoring rules follow the official evaluators exactly (see each module). A trial calls one
function:

Example:
    >>> from fairfront.objectives.measures.intrinsic import INTRINSIC_BENCHMARKS, evaluate_intrinsic
    >>> INTRINSIC_BENCHMARKS["crows_pairs"].needs
    'masked_lm'
    >>> # result = evaluate_intrinsic("stereoset", model, tokenizer, limit=200)
    >>> # result["overall"]["ss"], result["headline"]["bias"]
"""

from __future__ import annotations

from fairfront.objectives.measures.intrinsic._registry import (
    INTRINSIC_BENCHMARKS,
    IntrinsicBenchmark,
    evaluate_intrinsic,
)
from fairfront.objectives.measures.intrinsic.crows_pairs import (
    CrowsPair,
    crows_pairs_sentence_scores,
    crows_pairs_summary,
    evaluate_crows_pairs,
    load_crows_pairs,
)
from fairfront.objectives.measures.intrinsic.mlm_scoring import MaskedTokenQuery, score_masked_tokens
from fairfront.objectives.measures.intrinsic.seat import (
    BUILTIN_SEAT_TESTS,
    SeatSet,
    SeatTest,
    encode_sentences,
    evaluate_seat,
    load_seat_test,
    seat_effect_size,
    seat_p_value,
)
from fairfront.objectives.measures.intrinsic.stereoset import (
    StereoSetCluster,
    evaluate_stereoset,
    icat_score,
    load_stereoset,
    stereoset_sentence_scores,
    summarize_stereoset,
)
from fairfront.objectives.measures.intrinsic.winobias import (
    WinoBiasSentence,
    evaluate_winobias,
    load_winobias,
    winobias_sentence_scores,
    winobias_summary,
)

__all__ = [
    "INTRINSIC_BENCHMARKS",
    "IntrinsicBenchmark",
    "evaluate_intrinsic",
    "MaskedTokenQuery",
    "score_masked_tokens",
    "StereoSetCluster",
    "load_stereoset",
    "stereoset_sentence_scores",
    "summarize_stereoset",
    "icat_score",
    "evaluate_stereoset",
    "CrowsPair",
    "load_crows_pairs",
    "crows_pairs_sentence_scores",
    "crows_pairs_summary",
    "evaluate_crows_pairs",
    "WinoBiasSentence",
    "load_winobias",
    "winobias_sentence_scores",
    "winobias_summary",
    "evaluate_winobias",
    "SeatSet",
    "SeatTest",
    "BUILTIN_SEAT_TESTS",
    "load_seat_test",
    "encode_sentences",
    "seat_effect_size",
    "seat_p_value",
    "evaluate_seat",
]
