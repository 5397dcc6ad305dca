"""A masked-LM head on a compressed encoder, for the intrinsic bias benchmarks.

A trial compresses a ``*ForSequenceClassification`` (layers dropped, heads and neurons removed,
weights zeroed, linear layers in int8). The masked-LM benchmarks (StereoSet, CrowS-Pairs, the
WinoBias probe) need a masked language model: :func:`attach_masked_lm_head` builds one whose
encoder **is** the compressed encoder (the same module object, no weights copied, so every pruned
zero and every int8 layer is what the benchmark sees) and whose head is the checkpoint's
pretrained masked-LM head.

**Tied decoder.** BERT-like checkpoints tie the decoder (output embedding) to the word
embeddings. The head built here keeps that tie, to the *compressed* model's word embeddings:
that is the model the checkpoint describes (``tie_word_embeddings``), and a compression that
touches the embeddings (``include_embeddings``) changes both, as it would in the dense model.
A checkpoint with ``tie_word_embeddings = false`` keeps its own decoder weights.

:func:`check_masked_lm_head` tells, without loading any weights, whether a model folder ships
a masked-LM head at all (the offline MiniLM does not: its safetensors hold only the encoder).

Example:
    >>> # clf = AutoModelForSequenceClassification.from_pretrained(folder)
    >>> # mlm = attach_masked_lm_head(clf, source=folder)
    >>> # mlm.bert is clf.bert  -> True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel

from fairfront.errors import ConfigError
from fairfront.objectives.training.models import no_init_weights

__all__ = ["attach_masked_lm_head", "check_masked_lm_head", "masked_lm_head_state", "masked_lm_from_state",
           "load_masked_lm"]


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_masked_lm(source: str) -> PreTrainedModel:
    """The checkpoint's masked LM (encoder and pretrained head), in eval mode."""
    _quiet()
    try:
        return AutoModelForMaskedLM.from_pretrained(source, trust_remote_code=False).eval()
    except (OSError, ValueError) as err:
        raise ConfigError("model.name", source, f"a model with a masked-LM head that can be loaded here ({err})") \
            from None


def _is_base_key(key: str, prefix: str) -> bool:
    return key.startswith(prefix + ".")


def masked_lm_head_state(mlm: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The head's weights (every key outside the base model), on CPU, without a tied decoder weight."""
    prefix = mlm.base_model_prefix
    tied = _tied_to_base(mlm)
    return {k: v.detach().cpu().clone().contiguous() for k, v in mlm.state_dict().items()
            if not _is_base_key(k, prefix) and k not in tied}


def _tied_to_base(mlm: PreTrainedModel) -> set[str]:
    """Head parameters tied to the base model (the decoder tied to the word embeddings)."""
    if not getattr(mlm.config, "tie_word_embeddings", True):
        return set()
    tied = getattr(mlm, "_tied_weights_keys", None) or {}
    if isinstance(tied, dict):
        return {k for k, v in tied.items() if _is_base_key(v, mlm.base_model_prefix)}
    return {k for k in tied if k.endswith("decoder.weight")}


def masked_lm_from_state(config: dict, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """Rebuild a whole masked LM from its config dict and weights (what workers receive)."""
    _quiet()
    with no_init_weights():  # every weight is loaded next (strictly), then tied
        model = AutoModelForMaskedLM.from_config(AutoConfig.for_model(**config))
    model.load_state_dict(state)
    model.tie_weights()
    return model.eval()


def attach_masked_lm_head(compressed: PreTrainedModel, *, source: str | None = None, config: dict | None = None,
                          head_state: dict[str, torch.Tensor] | None = None) -> PreTrainedModel:
    """A masked LM whose encoder is ``compressed.base_model`` and whose head is the checkpoint's.

    Args:
        compressed: a (compressed) model with a ``base_model`` (classifier, masked LM, encoder).
        source: the checkpoint folder or hub name to read the pretrained head from; or
        config, head_state: the masked LM's config dict and :func:`masked_lm_head_state` (what a
            prepared study ships to workers, so nothing is read from disk in a trial).

    Returns:
        A masked LM in eval mode on the encoder's device. Its base-model attribute is the very
        module ``compressed.base_model`` (shared, not copied); its decoder is tied to the
        compressed word embeddings when the checkpoint ties them.
    """
    if (source is None) == (config is None or head_state is None):
        raise ValueError("give either source, or both config and head_state")
    _quiet()
    if source is not None:
        mlm = load_masked_lm(source)
    else:
        mlm = AutoModelForMaskedLM.from_config(AutoConfig.for_model(**config))
        missing, unexpected = mlm.load_state_dict(head_state, strict=False)
        head_missing = [k for k in missing if not _is_base_key(k, mlm.base_model_prefix)
                        and k not in _tied_to_base(mlm)]
        if unexpected or head_missing:
            raise ValueError(f"the masked-LM head state does not fit: missing {head_missing}, unexpected {unexpected}")
    encoder = compressed.base_model
    setattr(mlm, mlm.base_model_prefix, encoder)
    if getattr(mlm.config, "tie_word_embeddings", True) and mlm.get_output_embeddings() is not None:
        mlm.get_output_embeddings().weight = encoder.get_input_embeddings().weight
    device = encoder.get_input_embeddings().weight.device
    return mlm.to(device).eval()


def _safetensors_keys(folder: Path) -> list[str] | None:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    keys: list[str] = []
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            keys.extend(handle.keys())
    return keys


def check_masked_lm_head(source: str, *, key: str = "model.name", name: Any = None) -> None:
    """Refuse a model folder without a pretrained masked-LM head (reads key names only).

    A hub name (not a folder) is not checked here; loading it reports a missing head.

    Raises:
        ConfigError: the architecture has no masked-LM class, the folder has no safetensors
            weights, or none of its keys belongs to the masked-LM head (e.g. ``cls.*`` for BERT).
    """
    folder = Path(source)
    if not folder.is_dir():
        return
    shown = source if name is None else name
    _quiet()
    try:
        cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        with torch.device("meta"):
            skeleton = AutoModelForMaskedLM.from_config(cfg)
    except (OSError, ValueError) as err:
        raise ConfigError(key, shown, f"a model type with a masked-LM head ({err})") from None
    prefix = skeleton.base_model_prefix
    heads = {k.split(".")[0] for k in skeleton.state_dict() if not _is_base_key(k, prefix)}
    keys = _safetensors_keys(folder)
    if keys is None:
        raise ConfigError(key, shown, f"a model folder with safetensors weights (none in {folder})")
    if not any(k.split(".")[0] in heads for k in keys):
        raise ConfigError(key, shown, message=f"{folder} has no masked-LM head (no {'/'.join(sorted(heads))}.* "
                          "weights in its safetensors); the masked-LM benchmarks (stereoset, crows_pairs, winobias) "
                          "need a checkpoint that ships one, e.g. bert-base-uncased")
