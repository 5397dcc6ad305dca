"""JSON-safe values: what a trial stores must survive Optuna's JSON user attributes and reports.

Optuna writes user attributes with :func:`json.dumps`, which emits ``NaN`` and ``Infinity``
(not JSON: browsers, the dashboard and most other readers refuse them) and cannot write numpy
scalars or torch tensors at all. Every measure that can be undefined is therefore stored as
``None``, and every number as a plain Python ``int`` or ``float``. One helper does it for the
whole project, so a value means the same wherever it is read back.

Example:
    >>> import numpy as np
    >>> json_safe({"gap": np.float32(0.25), "ci": (float("nan"), 1.0), 3: np.int64(7)})
    {'gap': 0.25, 'ci': [None, 1.0], '3': 7}
    >>> finite_or_none(float("inf")) is None
    True
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np

__all__ = ["json_safe", "finite_or_none", "dumps"]


def finite_or_none(value: Any) -> float | None:
    """``value`` as a plain float, or ``None`` where it is NaN or infinite (an undefined measure)."""
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` writes as standard JSON.

    Dicts get string keys, tuples become lists, numpy scalars and torch tensors become Python
    numbers and lists, and non-finite floats become ``None``. Anything else (strings, bools,
    ``None``, ints) is kept as it is.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return finite_or_none(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    torch = sys.modules.get("torch")  # a tensor exists only where torch was imported; never import it here
    if torch is not None and isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` of :func:`json_safe` ``(obj)``; objects JSON cannot hold are written with ``str``."""
    return json.dumps(json_safe(obj), default=str, **kwargs)
