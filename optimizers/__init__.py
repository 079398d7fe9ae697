"""optiscape optimizers: pure optax GradientTransformations, nothing else.

Lion-K is the root (the zoo's members say in their docstrings where they sit
in it: PolarGrad is K = ½‖·‖_*², Freon with q ≥ 1 a Schatten K, Scion a
Frank–Wolfe ball; the others have no known K): `scale_by_lion_k(k=...)` with K from the registry in
`k_functions` (Lion is K = ℓ1, Muon is K = nuclear). See each module's
docstring for the update rule and its citation. Each registered optimizer
(`optimizers.factory`) declares its implicit bias once, in `implicit_bias`.
"""

# The zoo (../shared/OPTIMIZERS.md), each `scale_by_X` + alias.
from optimizers.crossfit import crossfit_adamw, scale_by_crossfit_adam
from optimizers.dion import dion, scale_by_dion
from optimizers.factory import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from optimizers.freon import freon, scale_by_freon
from optimizers.implicit_bias import Constraint, ImplicitBias, implicit_constraints
from optimizers.k_functions import K_FUNCTIONS, KFunction, dual_norms, get_k, register_k
from optimizers.kaon import kaon, scale_by_kaon
from optimizers.lion_k import ScaleByLionKState, lion, lion_k, scale_by_lion_k
from optimizers.mimuon import mimuon, muon_branch_fraction, scale_by_mimuon
from optimizers.muon import (
  MUON_SCALES,
  default_muon_routing,
  muon,
  muon_labels,
  scale_by_shape,
  shape_scale,
)
from optimizers.nexus import nexus
from optimizers.normuon import normuon, scale_by_normuon
from optimizers.orthogonalization import (
  NS_PRESETS,
  newton_schulz,
  ns_coefficients,
  orthogonalize,
  polar_svd,
)
from optimizers.pion import pion, scale_by_pion
from optimizers.polargrad import polargrad, scale_by_polargrad
from optimizers.registry import OptimizerEntry, register_optimizer
from optimizers.scion import scale_by_scion, scion
from optimizers.sf_normuon import evaluation_params, scale_by_sf_normuon, sf_normuon
from optimizers.symmetric import scale_by_symmetric, symmetric_stack

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
  "crossfit_adamw",
  "scale_by_crossfit_adam",
  "dion",
  "scale_by_dion",
  "freon",
  "scale_by_freon",
  "kaon",
  "scale_by_kaon",
  "mimuon",
  "muon_branch_fraction",
  "scale_by_mimuon",
  "normuon",
  "scale_by_normuon",
  "pion",
  "scale_by_pion",
  "polargrad",
  "scale_by_polargrad",
  "scale_by_scion",
  "scion",
  "evaluation_params",
  "scale_by_sf_normuon",
  "sf_normuon",
  "scale_by_symmetric",
  "symmetric_stack",
]
