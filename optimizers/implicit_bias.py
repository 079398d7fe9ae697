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

from optimizers import scion
from optimizers.freon import lion_k_equivalent
from optimizers.muon import default_muon_routing, muon_labels, path_names, shape_scale
from optimizers.registry import get_optimizer, hyperparameters, leaf_decays
from optimizers.symmetric import symmetric_labels

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
  "half_nuclear_sq": "σ_max(W)",
  "right_spectral": "σ_max(W)",
  "left_spectral": "σ_max(W)",
  "centered_rownorm": "the rows' Chebyshev radius",
  "hybrid_rownorm_spectral": "σ_max(W)",
  "scion_ball": "the class norm",
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


# ---------------------------------------------------------------------------
# The zoo (optimizers/polargrad.py, ...): a matrix rule on the leaves
# `default_muon_routing` selects (as Muon), AdamW's ℓ∞ ball on the others.


def routed(
  matrix: Callable[[dict, Any], Constraint],
  text: Callable[[dict], str],
  adam_key: str = "adam_weight_decay",
) -> ImplicitBias:
  """The spec of a Muon-routed optimizer: ``matrix(cfg, leaf)`` on its matrices,
  ℓ∞ with λ = cfg[adam_key] on its AdamW leaves; ``text(cfg)`` the matrix part."""

  def constraints(opt_config, params):
    cfg = dict(opt_config)
    adam_lam = _lam(cfg, adam_key)
    labels = muon_labels(params, cfg.get("routing") or default_muon_routing)

    def leaf(label, p):
      if label == "muon":
        return matrix(cfg, p)
      return Constraint(k="l1", k_options={}, weight_decay=_decay(cfg, p, adam_lam), bound=1.0)

    return jax.tree.map(leaf, labels, params)

  def summary(opt_config):
    cfg = dict(opt_config)
    sym = "λ" if adam_key == "weight_decay" else "λ_adam"
    adam_side = _clause(
      "l1", _lam(cfg, adam_key), _matrices_only(cfg), "AdamW leaves", f"1/{sym}", sym
    )
    return f"{text(cfg)}; {adam_side}"

  return ImplicitBias(constraints, summary)


def none_known(name: str, why: str, decays: bool = True) -> ImplicitBias:
  """No known ball on the matrices (kind "none"); σ_max(W) reported for comparison."""
  return routed(
    lambda cfg, p: Constraint(
      "nuclear", {}, _decay(cfg, p, _lam(cfg)) if decays else 0.0, 1.0, kind="none"
    ),
    lambda cfg: f"{name}: no known ball ({why}); λ·σ_max(W) reported (λ = {_lam(cfg):g})",
    adam_key="adam_weight_decay" if decays else "weight_decay",
  )


POLARGRAD = routed(
  lambda cfg, p: Constraint("half_nuclear_sq", {}, _decay(cfg, p, _lam(cfg)), 1.0, kind="penalty"),
  lambda cfg: f"K = ½‖·‖_*²: the penalty (λ/2)·σ_max(W)² on matrices, no ball (λ = {_lam(cfg):g})",
)


def _freon_matrix(cfg, p):
  q = float(cfg.get("q", 2 / 3))
  equivalent = lion_k_equivalent(q, np.shape(p), cfg.get("scale", "none"))
  if equivalent is None:
    return Constraint("nuclear", {}, _decay(cfg, p, _lam(cfg)), 1.0, kind="none")
  k, options, bound = equivalent
  return Constraint(k, options, _decay(cfg, p, _lam(cfg)), bound)


def _freon_text(cfg):
  q = float(cfg.get("q", 2 / 3))
  if q < 1:
    return f"Freon q = {q:g} < 1: K not convex, no known ball; λ·σ_max(W) reported"
  return f"K = Schatten-{q:g} (Lion-K): λ·‖σ(W)‖_q* ≤ bound on matrices (λ = {_lam(cfg):g})"


FREON = routed(_freon_matrix, _freon_text)
KAON = none_known("Kaon", "a chaotic map of the singular values, no ∇K")
NORMUON = none_known("NorMuon", "the row normalization depends on the state")
SF_NORMUON = none_known("SF-NorMuon", "NorMuon's direction at the fast iterate")
MIMUON = none_known("MiMuon", "switches between msign and momentum SGD")
DION = none_known("Dion", "a low-rank power-iteration estimate with error feedback")
PION = routed(
  lambda cfg, p: Constraint("nuclear", {}, 0.0, 1.0, kind="none"),
  lambda cfg: "Pion: spectrum preserved up to 4th-order drift, no ball, no decay on matrices",
  adam_key="weight_decay",
)


def _scion_constraints(opt_config, params):
  cfg = dict(opt_config)
  flat = {
    f"{kind}_{c}": cfg.get(f"{kind}_{c}")
    for kind in ("radius", "norm")
    for c in scion.SCION_CLASSES
  }
  radius, norm = scion.resolve_classes(cfg.get("radii"), cfg.get("norms"), **flat)
  labels = scion.scion_labels(params, cfg.get("vectors", "bias"), cfg.get("tied_head"))
  constrained = cfg.get("constrained", True)

  def leaf(path, cls, p):
    if cls == "adam":
      return Constraint("l1", {}, _decay(cfg, p, _lam(cfg)), 1.0)
    options = {
      "norm": norm[cls],
      "transpose": bool(scion.to_paper_layout(path, p, cls)),
      "spectral_max": bool(cfg.get("spectral_max", False)),
    }
    # The ball norm(W) ≤ ρ as λ·K*(θ) ≤ 1 with λ = 1/ρ.
    return Constraint(
      "scion_ball", options, 1.0 / radius[cls], 1.0, "ball" if constrained else "none"
    )

  return jax.tree_util.tree_map_with_path(leaf, labels, params)


def _scion_describe(opt_config):
  cfg = dict(opt_config)
  if not cfg.get("constrained", True):
    return "unconstrained Scion: no ball; the class norms reported against ρ"
  return "Scion (Frank–Wolfe): the explicit ball class-norm(W) ≤ ρ per class (radius ρ, not 1/λ)"


SCION = ImplicitBias(_scion_constraints, _scion_describe)

# The symmetric stack's classes: its rule's K, and whether decay makes a ball.
_SYMMETRIC_K = {
  "right_spectral": ("right_spectral", "penalty"),
  "left_spectral": ("left_spectral", "penalty"),
  "rownorm": ("rownorm", "ball"),
  "centered_rownorm": ("centered_rownorm", "ball"),
  "hybrid": ("hybrid_rownorm_spectral", "none"),
}


def _symmetric_constraints(opt_config, params):
  cfg = dict(opt_config)
  rules = {
    "embed": cfg.get("embed", "right_spectral"),
    "head": cfg.get("head", "hybrid"),
    "matrices": cfg.get("matrices", "muon"),
  }
  labels = symmetric_labels(params, **rules, tied_head=cfg.get("tied_head"))
  lam, adam_lam = _lam(cfg), _lam(cfg, "adam_weight_decay")

  def leaf(path, cls, p):
    if cls == "adam":
      return Constraint("l1", {}, _decay(cfg, p, adam_lam), 1.0)
    rule = rules[cls]
    if rule == "muon":
      return Constraint(
        "nuclear", {}, _decay(cfg, p, lam), shape_scale(np.shape(p), cfg.get("scale", "shape"))
      )
    k, kind = _SYMMETRIC_K[rule]
    # Row rules read the vocabulary/output axis as rows: a Dense kernel's columns.
    options = {"axis": -2} if k == "rownorm" and path_names(path)[-1] == "kernel" else {}
    return Constraint(k, options, _decay(cfg, p, lam), 1.0, kind)

  return jax.tree_util.tree_map_with_path(leaf, labels, params)


def _symmetric_describe(opt_config):
  cfg = dict(opt_config)
  parts = [
    f"{c}: {cfg.get(c, d)}"
    for c, d in (("embed", "right_spectral"), ("head", "hybrid"), ("matrices", "muon"))
  ]
  return (
    f"per class its K ({', '.join(parts)}): spectral rules penalize (λ/2)·σ_max², row rules "
    f"bound the rows by 1/λ, Muon σ_max ≤ s/λ (λ = {_lam(cfg):g}; λ_adam = "
    f"{_lam(cfg, 'adam_weight_decay'):g})"
  )


SYMMETRIC = ImplicitBias(_symmetric_constraints, _symmetric_describe)

# Cross-fitted AdamW (optimizers/crossfit.py): std is optax.adamw (its ℓ∞ ball);
# the corrected modes have none known, ‖θ‖_∞ reported against 1/λ for comparison.
_ELL_INF_NONE = uniform("l1", kind="none")


def _crossfit_constraints(opt_config, params):
  std = dict(opt_config).get("mode", "full") == "std"
  return (ELL_INF if std else _ELL_INF_NONE).constraints(opt_config, params)


def _crossfit_describe(opt_config):
  cfg = dict(opt_config)
  if cfg.get("mode", "full") == "std":
    return f"crossfit_adamw mode=std is AdamW: {ELL_INF.describe(cfg)}"
  return (
    f"crossfit_adamw mode={cfg.get('mode', 'full')}: no known ball (the source gives none); "
    f"λ·‖θ‖_∞ reported (λ = {_lam(cfg):g})"
  )


CROSSFIT = ImplicitBias(_crossfit_constraints, _crossfit_describe)
