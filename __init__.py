"""fairfront: the accuracy-size-bias Pareto front of compressed NLP models."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
