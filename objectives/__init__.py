"""How one compression setting is scored.

``data`` (datasets and the synthetic task), ``training`` (models, the training loop, the
once-per-study preparation, the trial) and ``measures`` (accuracy, size and every bias measure).
"""
