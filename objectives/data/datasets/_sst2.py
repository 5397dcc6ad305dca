"""SST-2: binary sentence-level sentiment (Stanford Sentiment Treebank, Kim 2014 splits).

Citation: Richard Socher, Alex Perelygin, Jean Wu, Jason Chuang, Christopher D. Manning, Andrew
Ng, Christopher Potts. *Recursive Deep Models for Semantic Compositionality Over a Sentiment
Treebank.* EMNLP 2013.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairfront.errors import DataError
from fairfront.objectives.data.datasets._dataset import TextDataset
from fairfront.objectives.data.datasets._paths import require_file

__all__ = ["CITATION", "FILES", "LABEL_NAMES", "load_sst2"]

CITATION = ("Richard Socher, Alex Perelygin, Jean Wu, Jason Chuang, Christopher D. Manning, Andrew Ng, "
            "Christopher Potts. Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank. "
            "EMNLP 2013. Splits: Yoon Kim. Convolutional Neural Networks for Sentence Classification. EMNLP 2014.")

FILES = {"train": "stsa.binary.train", "validation": "stsa.binary.dev", "test": "stsa.binary.test"}
"""fairfront split -> file of the official (Kim 2014) split."""

LABEL_NAMES = ("negative", "positive")


def load_sst2(folder: Path, *, seed: int = 0) -> TextDataset:
    """Read the three ``stsa.binary.*`` files, keeping their official train / dev / test split.

    Each line is ``<label> <sentence>`` (``0`` negative, ``1`` positive), split on the first
    space; the sentence stays as distributed (lower-cased, PTB-tokenised: ``-lrb-``, ``n't``).
    There is no protected attribute (``group`` is ``<NA>``); the task is a control for
    accuracy-vs-size and a base for gender-swap counterfactual tests. ``seed`` is unused: the
    split is the official one.

    Citation: Socher et al. *Recursive Deep Models for Semantic Compositionality Over a Sentiment
    Treebank.* EMNLP 2013 (splits: Kim, EMNLP 2014).
    """
    del seed
    texts, labels, splits = [], [], []
    for split, name in FILES.items():
        path = require_file("sst2", folder / name)
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                label, _, sentence = line.partition(" ")
                if label not in ("0", "1") or not sentence.strip():
                    raise DataError(f"sst2: {path.name} line {number} is not '<0|1> <sentence>': {line[:60]!r}")
                texts.append(sentence)
                labels.append(LABEL_NAMES[int(label)])
                splits.append(split)
    frame = pd.DataFrame({"text": texts, "label": labels, "group": pd.NA, "split": splits}).astype("string")
    return TextDataset(name="sst2", frame=frame, label_names=LABEL_NAMES, group_names=(), citation=CITATION)
