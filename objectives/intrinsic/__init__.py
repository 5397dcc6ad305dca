"""Intrinsic bias benchmarks for masked language models and encoders."""
