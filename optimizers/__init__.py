"""optiscape optimizers: pure optax GradientTransformations, nothing else.

Lion-K is the root: `scale_by_lion_k(k=...)` with K from the registry in
`k_functions` (Lion is K = ℓ1, Muon is K = nuclear). See each module's
docstring for the update rule and its citation. Each registered optimizer
(`optimizers.factory`) declares its implicit bias once, in `implicit_bias`.
"""

from optimizers.factory import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from optimizers.implicit_bias import Constraint, ImplicitBias, implicit_constraints
from optimizers.k_functions import K_FUNCTIONS, KFunction, dual_norms, get_k, register_k
from optimizers.lion_k import ScaleByLionKState, lion, lion_k, scale_by_lion_k
from optimizers.muon import (
  MUON_SCALES,
  default_muon_routing,
  muon,
  muon_labels,
  scale_by_shape,
  shape_scale,
)
from optimizers.nexus import nexus
from optimizers.orthogonalization import (
  NS_PRESETS,
  newton_schulz,
  ns_coefficients,
  orthogonalize,
  polar_svd,
)
from optimizers.registry import OptimizerEntry, register_optimizer

__all__ = [
  "OPTIMIZERS",
  "SCHEDULES",
  "make_optimizer",
  "make_schedule",
  "nexus",
  "OptimizerEntry",
  "register_optimizer",
  "Constraint",
  "ImplicitBias",
  "implicit_constraints",
  "K_FUNCTIONS",
  "KFunction",
  "dual_norms",
  "get_k",
  "register_k",
  "ScaleByLionKState",
  "lion",
  "lion_k",
  "scale_by_lion_k",
  "MUON_SCALES",
  "default_muon_routing",
  "muon",
  "muon_labels",
  "scale_by_shape",
  "shape_scale",
  "NS_PRESETS",
  "newton_schulz",
  "ns_coefficients",
  "orthogonalize",
  "polar_svd",
]
