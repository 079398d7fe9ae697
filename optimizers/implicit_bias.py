"""Each optimizer's implicit bias, declared once: the set its iterates end in.

Lion-K with convex K and decoupled weight decay λ solves
min_θ f(θ) + (1/λ)·K*(λθ); for a norm K, K* is the indicator of the dual-norm
ball, so training converges into argmin f ∩ {θ : λ·K*(θ) ≤ 1} when that is not
empty (Chen, Liu, Liang, Liu, "Lion Secretly Solves Constrained Optimization,
As Lyapunov Predicts", arXiv:2310.05898). Per leaf that is a `Constraint`
λ·K*(θ) ≤ bound, with K from `optimizers.k_functions`:

- adamw, lion: K = ℓ1, K* = ℓ∞ (AdamW: Xie & Li, "Implicit Bias of AdamW: ℓ∞
  Norm Constrained Optimization", arXiv:2404.04454; Lion: Chen et al. 2023);
- lion_k: its own K, with the K's options from the section;
- muon: K = nuclear, K* = σ_max, bound = the per-matrix scale s (the update is
  s·U·Vᵀ; exact with ``method="svd"``, about 0.7·s to 1.13·s with the quintic
  Newton–Schulz), on the leaves Muon takes; ℓ∞ with adam_weight_decay on its
  AdamW leaves;
- sgd: no known ball (kind "none"); ℓ2 is reported for comparison.

A leaf that weight_decay_mask leaves out has weight_decay 0 (no ball). Each
spec is an `ImplicitBias` registered with its constructor in
`optimizers.factory`; `implicit_constraints` and `describe` read that entry.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from optimizers.muon import default_muon_routing, muon_labels, shape_scale
from optimizers.registry import get_optimizer, hyperparameters, leaf_decays

KINDS = ("ball", "penalty", "none")


@dataclasses.dataclass(frozen=True)
class Constraint:
  """λ·K*(θ) ≤ bound for one leaf. A plain dataclass, so a pytree leaf.

  kind: "ball" (the optimizer converges into it), "penalty" (λ·K*(θ) is
  penalized, not bounded: PolarGrad-type K = ½‖·‖²), or "none" (no known bias;
  K is a norm reported for comparison).
  """

  k: str
  k_options: dict
  weight_decay: float
  bound: float
  kind: str = "ball"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Unknown constraint kind {self.kind!r}; known: {KINDS}.")


class ImplicitBias(NamedTuple):
  """One optimizer's spec: per-leaf constraints and their one-line summary."""

  constraints: Callable[[Mapping[str, Any], Any], Any]  # (opt_config, params) -> tree
  describe: Callable[[Mapping[str, Any]], str]  # opt_config -> one line


def implicit_constraints(opt_config: Mapping[str, Any], params) -> Any:
  """Per leaf, the `Constraint` the section's optimizer converges into."""
  spec = get_optimizer(dict(opt_config)["name"]).implicit_bias
  return spec.constraints(opt_config, params)


def describe(opt_config: Mapping[str, Any]) -> str:
  """One line for summaries and reports, e.g. "K = nuclear: σ_max(W) ≤ s/λ on
  Muon matrices (λ = 0.1, s = shape); AdamW leaves free (λ_adam = 0)"."""
  return get_optimizer(dict(opt_config)["name"]).implicit_bias.describe(opt_config)


# The quantity K* bounds, by K (for `describe`).
DUAL_NORM_NAMES = {
  "l1": "‖θ‖∞",
  "huber": "‖θ‖∞",
  "l2": "‖θ‖₂",
  "rownorm": "max row ‖θ‖₂",
  "nuclear": "σ_max(W)",
  "spectral": "‖W‖_*",
  "schatten": "‖σ(W)‖_q",
}


def _lam(cfg: dict, key: str = "weight_decay") -> float:
  return float(cfg.get(key, 0.0))


def _matrices_only(cfg: dict) -> bool:
  return cfg.get("weight_decay_mask", "all") == "matrices"


def _decay(cfg: dict, leaf, lam: float) -> float:
  """λ for a leaf the section's weight_decay_mask decays, else 0."""
  return lam if leaf_decays(cfg.get("weight_decay_mask", "all"), leaf) else 0.0


def _same_k(cfg: dict, params, k: str, options: dict, kind: str = "ball"):
  """Constraint(k, options, λ or 0 by the mask, bound 1) on every leaf."""
  lam = _lam(cfg)
  return jax.tree.map(
    lambda p: Constraint(
      k=k, k_options=options, weight_decay=_decay(cfg, p, lam), bound=1.0, kind=kind
    ),
    params,
  )


def _clause(
  k: str,
  lam: float,
  matrices_only: bool,
  scope: str = "",
  radius: str = "1/λ",
  sym: str = "λ",
  extra: str = "",
) -> str:
  """ "‖θ‖∞ ≤ 1/λ on leaves of rank ≥ 2 (λ = 0.1)"-style text of one ball."""
  if lam == 0:
    return f"{scope or 'every leaf'} free ({sym} = 0)"
  if matrices_only:
    scope = f"{scope or 'leaves'} of rank ≥ 2"
  where = f" on {scope}" if scope else ""
  return f"{DUAL_NORM_NAMES.get(k, 'K*(θ)')} ≤ {radius}{where} ({sym} = {lam:g}{extra})"


def uniform(k: str, kind: str = "ball") -> ImplicitBias:
  """The same K (without options) on every leaf, bound 1: AdamW, Lion."""

  def summary(opt_config):
    cfg = dict(opt_config)
    return f"K = {k}: {_clause(k, _lam(cfg), _matrices_only(cfg))}"

  return ImplicitBias(
    lambda opt_config, params: _same_k(dict(opt_config), params, k, {}, kind), summary
  )


def _lion_k_options(cfg: dict) -> tuple[str, dict]:
  """The section's K and its options (the hyperparameters that are not Lion-K's own)."""
  options = {
    key: v for key, v in hyperparameters(cfg).items() if key not in ("k", "b1", "b2", "mu_dtype")
  }
  return cfg.get("k", "l1"), options


def _lion_k_constraints(opt_config, params):
  cfg = dict(opt_config)
  return _same_k(cfg, params, *_lion_k_options(cfg))


def _lion_k_describe(opt_config):
  cfg = dict(opt_config)
  k, options = _lion_k_options(cfg)
  label = k + (f"({', '.join(f'{o}={v}' for o, v in sorted(options.items()))})" if options else "")
  return f"K = {label}: {_clause(k, _lam(cfg), _matrices_only(cfg))}"


def _muon_constraints(opt_config, params):
  cfg = dict(opt_config)
  lam, adam_lam, scale = _lam(cfg), _lam(cfg, "adam_weight_decay"), cfg.get("scale", "shape")

  def leaf(label, p):
    if label == "muon":
      return Constraint(
        k="nuclear",
        k_options={},
        weight_decay=_decay(cfg, p, lam),
        bound=shape_scale(np.shape(p), scale),
      )
    return Constraint(k="l1", k_options={}, weight_decay=_decay(cfg, p, adam_lam), bound=1.0)

  labels = muon_labels(params, cfg.get("routing") or default_muon_routing)
  return jax.tree.map(leaf, labels, params)


def _muon_describe(opt_config):
  cfg = dict(opt_config)
  muon_side = _clause(
    "nuclear", _lam(cfg), False, "Muon matrices", "s/λ", extra=f", s = {cfg.get('scale', 'shape')}"
  )
  adam_side = _clause(
    "l1", _lam(cfg, "adam_weight_decay"), _matrices_only(cfg), "AdamW leaves", "1/λ_adam", "λ_adam"
  )
  return f"K = nuclear: {muon_side}; {adam_side}"


def _sgd_describe(opt_config):
  return f"no known ball (SGD); λ·‖θ‖₂ reported for comparison (λ = {_lam(dict(opt_config)):g})"


ELL_INF = uniform("l1")  # AdamW, Lion.
LION_K = ImplicitBias(_lion_k_constraints, _lion_k_describe)
MUON = ImplicitBias(_muon_constraints, _muon_describe)
SGD = ImplicitBias(uniform("l2", kind="none").constraints, _sgd_describe)
