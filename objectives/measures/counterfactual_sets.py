"""Counterfactual texts prepared once per study, and a trial's counterfactual measures on them.

For each ``[bias] counterfactual`` swap list and each scored split (validation, test), the
preparation swaps the group terms of every text (:func:`~fairfront.objectives.measures.counterfactual.
counterfactual_texts`), keeps only the texts the swap changes, and tokenizes the counterfactuals
with the study's tokenizer. A trial then needs one forward pass over them: the original texts
were already scored with the split. The measures are those of
:func:`~fairfront.objectives.measures.counterfactual.counterfactual_report` (Garg et al. 2019), computed
by :func:`~fairfront.objectives.measures.counterfactual.counterfactual_scores` from the probabilities:

* ``flip_rate``: share of changed texts whose predicted class changes;
* ``mean_abs_prob_change``: mean ``|q[c] - p[c]|``, ``c`` the class predicted for the original.

Every list is reported on its own, and ``all`` pools every (text, list) counterfactual of the
split; the pooled values are the study's ``counterfactual_flip_rate`` and
``counterfactual_prob_change`` objectives. The dense teacher's numbers on the same texts are
kept beside them (``dense``), so a trial shows whether compression made the model more
sensitive to the group terms than it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.measures.bias_settings import SwapList
from fairfront.objectives.measures.counterfactual import counterfactual_scores, counterfactual_texts

__all__ = ["SwappedTexts", "build_swapped_texts", "counterfactual_measures", "softmax"]


@dataclass
class SwappedTexts:
    """The tokenized counterfactuals of one split under one swap list.

    Attributes:
        list_name: The swap list's name.
        index: Position in the split of each changed text.
        encoded: The counterfactual texts, tokenized; labels and groups are the originals'.
        dense_logits: The dense teacher's logits on the counterfactuals.
    """

    list_name: str
    index: np.ndarray
    encoded: EncodedSplit
    dense_logits: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def build_swapped_texts(texts: Sequence[str], split: EncodedSplit, swap_list: SwapList, tokenizer, *,
                        max_length: int) -> SwappedTexts:
    """Swap, keep the changed texts, tokenize (``dense_logits`` is left empty for the caller to fill).

    Args:
        texts: The split's raw texts, in the split's order.
        split: The split, tokenized (its labels and groups are copied for the changed texts).
        swap_list: The term pairs.
        tokenizer: The study's tokenizer (truncation to ``max_length``, as for the split).
    """
    if len(texts) != len(split):
        raise ValueError(f"got {len(texts)} texts for a split of {len(split)} examples")
    indices, new_texts = counterfactual_texts(texts, swap_list.pairs)
    index = np.asarray(indices, dtype=np.int64)
    ids = tokenizer(new_texts, truncation=True, max_length=max_length)["input_ids"] if new_texts else []
    encoded = split.subset(index, [np.asarray(x, dtype=np.int64) for x in ids])
    return SwappedTexts(swap_list.name, index, encoded, np.zeros((len(index), 0), dtype=np.float32))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def counterfactual_measures(sets: Sequence[SwappedTexts], original_logits: np.ndarray,
                            swapped_logits: Sequence[np.ndarray], *, dense_logits: np.ndarray | None = None) -> dict:
    """Per-list and pooled counterfactual reports of one model on one split.

    Args:
        sets: The split's prepared counterfactuals, one per swap list.
        original_logits: The model's logits on the whole split, ``[n_examples, n_classes]``.
        swapped_logits: The model's logits on each set's counterfactuals, in ``sets`` order.
        dense_logits: The dense teacher's logits on the whole split; adds a ``dense`` entry (the
            same reports for the teacher, from ``set.dense_logits``).

    Returns:
        ``{"lists": {name: report}, "all": report}`` (and ``"dense"`` of the same shape). For
        ``all``, ``n_texts`` counts (text, list) tests: the split's size times the lists.
    """
    if len(sets) != len(swapped_logits):
        raise ValueError(f"got logits for {len(swapped_logits)} counterfactual sets, expected {len(sets)}")
    original_logits = np.asarray(original_logits)
    n = len(original_logits)

    def reports(base: np.ndarray, swapped: Sequence[np.ndarray]) -> dict:
        per_list, originals, counterfactuals = {}, [], []
        for s, logits in zip(sets, swapped):
            logits = np.asarray(logits)
            if len(logits) != len(s):
                raise ValueError(f"swap list {s.list_name!r}: got logits for {len(logits)} counterfactuals, "
                                 f"expected {len(s)}")
            p = softmax(base[s.index]) if len(s) else np.zeros((0, base.shape[1]))
            q = softmax(logits) if len(s) else np.zeros((0, base.shape[1]))
            per_list[s.list_name] = counterfactual_scores(p, q, n_texts=n)
            originals.append(p)
            counterfactuals.append(q)
        width = base.shape[1]
        pooled = counterfactual_scores(np.concatenate(originals) if originals else np.zeros((0, width)),
                                       np.concatenate(counterfactuals) if counterfactuals else np.zeros((0, width)),
                                       n_texts=n * len(sets))
        return {"lists": per_list, "all": pooled}

    out = reports(original_logits, swapped_logits)
    if dense_logits is not None:
        out["dense"] = reports(np.asarray(dense_logits), [s.dense_logits for s in sets])
    return out
