"""The norm ball each optimizer confines the weights to: λ·K*(θ) per leaf.

Lion-K with decoupled weight decay λ converges into {θ : λ·K*(θ) ≤ 1}, K* the
dual norm of its K (Chen, Liu, Liang, Liu, "Lion Secretly Solves Constrained
Optimization, As Lyapunov Predicts", arXiv:2310.05898). Which K each optimizer
has is declared once, in `optimizers.implicit_bias` (ℓ1 for AdamW and Lion,
nuclear for Muon's matrices, the section's K for Lion-K, ℓ2 for SGD as a
comparison only); everything here reads it.

Here values are λ·K*(θ_leaf) per leaf (≤ 1 inside the ball). With a train.py
config, `config_constraints` uses `optimizers.implicit_constraints`, which also
knows each leaf's λ and Muon's per-matrix scale (bound).

Also the Euclidean projections onto these balls, used to keep fitted curves
inside: ℓ∞ → clip every entry to [−r, r]; spectral → clip the singular values
at r (the nearest matrix in Frobenius norm, by the SVD).
"""

from typing import Any

import jax
import jax.numpy as jnp

from analysis.paths import map_along_path
from optimizers import get_k, implicit_constraints

# K name -> its dual-ball projection kind ("linf" or "spectral").
PROJECTABLE_KS = {"l1": "linf", "huber": "linf", "nuclear": "spectral"}


def optimizer_ks(optimizer: str, params, routing=None) -> Any:
  """The pytree of K names (one per leaf) of ``optimizer``'s constraint.

  ``optimizer``: a registered name ("adamw", "lion", "sgd", "muon", ...) or
  "lion_k-<k>" (e.g. "lion_k-l1", "lion_k-nuclear"); ``routing`` is Muon's
  (default `default_muon_routing`)."""
  name, _, k = optimizer.partition("-")
  section = {"name": name if name == "lion_k" else optimizer}
  if name == "lion_k" and k:
    get_k(k)  # Unknown K: fail here with the registry's list.
    section["k"] = k
  if routing is not None:
    section["routing"] = routing
  return jax.tree.map(lambda c: c.k, implicit_constraints(section, params))


def constraint_values(params, ks: str | Any, weight_decay: float | Any = 1.0):
  """λ·K*(θ_leaf) per leaf, float32 scalars. ``ks``: one K name for every leaf
  or a pytree of names; ``weight_decay``: λ, a float or a pytree of floats."""
  ks, lams = _per_leaf(params, ks, "ks"), _per_leaf(params, weight_decay, "weight_decay")
  return jax.tree.map(
    lambda x, k, lam: lam * get_k(k).dual_norm(x).astype(jnp.float32), params, ks, lams
  )


def optimizer_constraints(optimizer: str, params, weight_decay: float, routing=None):
  """λ·K*(θ_leaf) per leaf for the named optimizer (`optimizer_ks`)."""
  return constraint_values(params, optimizer_ks(optimizer, params, routing), weight_decay)


def config_constraints(opt_config, params):
  """λ·K*(θ_leaf)/bound per leaf from a train.py optimizer config section
  (`optimizers.implicit_constraints`): ≤ 1 inside the ball."""
  constraints = implicit_constraints(opt_config, params)
  return jax.tree.map(
    lambda c, x: (
      (c.weight_decay / c.bound) * get_k(c.k, **c.k_options).dual_norm(x).astype(jnp.float32)
    ),
    constraints,
    params,
  )


def max_constraint(values) -> jax.Array:
  """The largest per-leaf value: the whole tree is inside iff it is ≤ 1."""
  return jnp.max(jnp.stack([jnp.max(v) for v in jax.tree.leaves(values)]))


def constraints_along_path(
  kind: str,
  a,
  b,
  ts,
  ks,
  weight_decay=1.0,
  bends=None,
  batch_size: int = 8,
  extrapolate: bool = False,
):
  """`constraint_values` at φ(t) for every t of ts: per-leaf arrays of shape (T,)."""
  return map_along_path(
    lambda p: constraint_values(p, ks, weight_decay), kind, a, b, ts, bends, batch_size, extrapolate
  )


def project_linf(x, radius):
  """argmin_{‖y‖∞ ≤ r} ‖y − x‖₂: clip every entry to [−r, r]."""
  return jnp.clip(x, -radius, radius).astype(x.dtype)


def project_spectral(x, radius):
  """argmin_{σ_max(y) ≤ r} ‖y − x‖_F: U·min(Σ, r)·Vᵀ. Leading axes are batch
  axes; a vector is a 1×n matrix (its ℓ2 norm clipped)."""
  shape = x.shape
  m = x.reshape((1,) * (2 - x.ndim) + shape) if x.ndim < 2 else x
  u, s, vt = jnp.linalg.svd(m.astype(jnp.promote_types(m.dtype, jnp.float32)), full_matrices=False)
  clipped = (u * jnp.minimum(s, radius)[..., None, :]) @ vt
  return clipped.reshape(shape).astype(x.dtype)


def project_onto_ball(params, ks: str | Any, weight_decay: float | Any):
  """Each leaf projected onto its ball {λ·K*(θ) ≤ 1} (radius 1/λ; λ = 0: no
  constraint). Ks with an ℓ∞ or spectral dual (PROJECTABLE_KS) only."""
  ks, lams = _per_leaf(params, ks, "ks"), _per_leaf(params, weight_decay, "weight_decay")

  def leaf(x, k, lam):
    if k not in PROJECTABLE_KS:
      raise ValueError(f"No projection for K={k!r}; projectable: {sorted(PROJECTABLE_KS)}.")
    if lam == 0:
      return x
    project = project_linf if PROJECTABLE_KS[k] == "linf" else project_spectral
    return project(x, 1.0 / lam)

  return jax.tree.map(leaf, params, ks, lams)


def _per_leaf(params, value, name):
  """``value`` as a pytree like params: one value (a leaf) is broadcast."""
  if jax.tree_util.treedef_is_leaf(jax.tree.structure(value)):
    return jax.tree.map(lambda _: value, params)
  if jax.tree.structure(value) != jax.tree.structure(params):
    raise ValueError(
      f"{name} must be one value or a pytree like params: "
      f"{jax.tree.structure(value)} vs {jax.tree.structure(params)}."
    )
  return value
