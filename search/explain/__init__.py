"""``fairfront explain``: where the bias of a study's compressed models comes from.

One concept per module: :mod:`.importance` (which knob, per objective), :mod:`.dependence` (how a bias
objective moves with its strongest parameters), :mod:`.who_pays` (which classes and groups lose against
the teacher as size shrinks), :mod:`.model_origins` (which layer and head, by ablation and gradient),
:mod:`.exemplars` (which examples), :mod:`.store` (the results kept with the study), :mod:`.text`
(what the command prints), :mod:`.report_section` (the study report's plots), :mod:`.command` (the command).

The package imports nothing itself, so the study report can read stored results without loading the
analyses (torch, scikit-learn): import :mod:`.command` to run them.
"""
