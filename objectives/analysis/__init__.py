"""Where a model's bias comes from: ablation of its heads and feed-forward blocks, and the gradient estimate.

One concept per module: :mod:`.components` (what can be switched off, and the gates that do it in
one batched pass), :mod:`.paired` (the paired bootstrap of a change), :mod:`.ablation` (every
component ablated and ranked), :mod:`.gradient` (``|d gap / d gate|`` and its rank agreement with
ablation). ``fairfront explain`` (:mod:`fairfront.search.explain`) runs them on a study's teacher and trials.
"""

from fairfront.objectives.analysis.ablation import ablate_components
from fairfront.objectives.analysis.components import Component, ablated_predictions, component_sets, components
from fairfront.objectives.analysis.gradient import gap_gradients, rank_agreement
from fairfront.objectives.analysis.paired import PairedBootstrap

__all__ = ["Component", "PairedBootstrap", "ablate_components", "ablated_predictions", "component_sets",
           "components", "gap_gradients", "rank_agreement"]
