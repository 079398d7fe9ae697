"""MiMuon: Muon's step when the momentum's singular values are well separated,
momentum SGD's otherwise.

Huang, Luo, Chen, "MiMuon: Mixed Muon Optimizer with Improved Generalization for
Large Models" (arXiv:2605.19619). No authors' code was found: this follows a
reconstruction (OPTIMIZERS.md, confidence C), so the uncertain parts (how the
gap is measured and τ) are options. Per matrix, with σ₁ ≥ σ₂ ≥ … the singular
values of M:

    M ← β·G + (1 − β)·M                      (β weights the NEW gradient)
    κ = min_i (σ_i − σ_{i+1}) over consecutive nonzero σ's
    κ ≥ τ:  W ← (1 − ηλ)·W − η·s·msign(M)    (Muon branch, msign = U·Vᵀ)
    else:   W ← (1 − ηλ)·W − η·M             (momentum-SGD branch)

The paper's motivation is Muon's stability bound O(1/(N·κ^T)): the polar factor's
singular vectors are unstable when two singular values nearly coincide, so a
repeated singular value (κ ≈ 0) falls back to SGD. "Consecutive" counts
indices, so a repeated value has gap 0 (how the reconstruction's "distinct"
reads in floating point). Fewer than two nonzero σ's: no gap, Muon branch.

Options of this reconstruction:
- ``gap``: "svd" (the exact singular values, jnp.linalg.svd) or "estimate"
  (σ = √eig of the short side's Gram matrix M·Mᵀ, its eigenvalues alone by
  tridiagonalization and bisection: 5× cheaper than the SVD on 768×3072; it resolves gaps of
  small σ's only to ≈ eps·σ₁²/σ).
- ``gap_scale``: "relative" (κ/σ₁, default: τ is then dimensionless, the same
  for every layer and loss scale) or "absolute" (κ itself, the literal rule).
- ``tau``: the threshold τ (default 1e−6, relative); the paper's value is unknown.
  Measured on the tiny GPT-2 (2026-12-03, momentum of 64×192…256×64 matrices after
  250 steps): the smallest relative gap was 7e−7 to 2e−5 and the median gap 8e−5 to
  6e−4, so τ = 1e−3 took the SGD branch in every matrix at every step (branch
  fraction 0.0: MiMuon was momentum SGD, validation loss 2.98 against Muon's 2.11);
  1e−6, about eight float32 ulps of σ₁, reads "two singular values coincide" at the
  precision the SVD resolves: 99–100% Muon-branch steps per matrix, validation 2.27.
- ``method``: msign by Newton–Schulz (Muon's quintic, default) or the SVD.
- ``scale``: Muon's per-matrix factor s ("none" by default, the rule as written).
- ``gap_every``: measure κ every k-th step (steps 0, k, 2k, …) and keep each matrix's
  branch in between (default 1: every step, the rule as written). The gap costs an SVD or
  a tridiagonalization per matrix per step (on GPT-2's 768×3072 matrices more than the
  Newton–Schulz itself on this CPU); a branch decided k steps ago is a cheap estimate of
  the current one, as the singular-value spacing of the momentum (an EMA) drifts slowly.
  Off the check steps the gap is not computed (lax.cond; under vmap both sides run).
Both branches are computed and one is selected with jnp.where, so it runs
under jit and vmap. The state counts Muon-branch steps per matrix (one per
leading index of a stack): `muon_branch_fraction(state)` is what to log.

Layout: a flax kernel is (..., in, out) = Wᵀ; singular values and msign do not
care (msign(Wᵀ) = msign(W)ᵀ), so nothing is transposed.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import eigh_tridiagonal

from optimizers import domains, lapack
from optimizers import owner_layout as owner_layout_lib
from optimizers.muon import MUON_SCALES, shape_scale
from optimizers.orthogonalization import ORTHOGONALIZE_METHODS, orthogonalize
from optimizers.zoo_common import (
  ADAM_DOMAINS,
  ROUTING_DOMAIN,
  adamw_side,
  check_matrix,
  find_state,
  routed,
  state_dtype,
  unzip,
)

GAP_ESTIMATORS = ("svd", "estimate")
GAP_SCALES = ("relative", "absolute")

IMPLICIT_BIAS_NOTE = (
  "None known: the rule switches per step between msign (Lion-K with K = nuclear, whose ball "
  "is σ_max ≤ s/λ) and momentum SGD (no ball), so no single K describes it."
)


class ScaleByMiMuonState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # M, like the params.
  muon_steps: optax.Updates  # int32, shape leaf.shape[:-2]: Muon-branch steps per matrix.
  take_muon: optax.Updates  # bool, shape leaf.shape[:-2]: the branch of the last gap check.


def singular_values(m, gap: str = "svd"):
  """σ of every matrix in ``m`` (..., a, b), descending, float32."""
  m = m.astype(jnp.float32)
  if gap == "svd":
    return lapack.singular_values(m)
  if m.shape[-2] > m.shape[-1]:
    m = jnp.swapaxes(m, -1, -2)  # The short side's Gram matrix: (short × short).
  eig = gram_eigenvalues(m @ jnp.swapaxes(m, -1, -2))
  return jnp.sqrt(jnp.maximum(eig[..., ::-1], 0.0))


def gram_eigenvalues(a):
  """Ascending eigenvalues of every symmetric matrix in ``a`` (..., k, k) without their
  eigenvectors: Householder tridiagonalization (LAPACK sytrd), then bisection on the
  tridiagonal matrix. jnp.linalg.eigvalsh computes the eigenvectors too and drops them (48
  ms against 27 ms for a 768×768 matrix on this CPU; the same values to 1e-7·λ_max)."""
  _, diagonal, off_diagonal, _ = lapack.tridiagonal(a)
  bisect = lambda d, e: jnp.sort(eigh_tridiagonal(d, e, eigvals_only=True))
  for _ in range(a.ndim - 2):
    bisect = jax.vmap(bisect)
  return bisect(diagonal, off_diagonal)


def smallest_gap(sigma, gap_scale: str = "relative", max_dim: int | None = None):
  """κ = min (σ_i − σ_{i+1}) over consecutive nonzero σ's (descending input),
  divided by σ₁ if ``gap_scale`` is "relative"; +inf with < 2 nonzero σ's.
  ``max_dim``: the matrix's long side, for the zero tolerance."""
  s_max = sigma[..., :1]
  # Nonzero: above the numerical-rank tolerance of numpy.linalg.matrix_rank.
  tol = s_max * (max_dim or sigma.shape[-1]) * jnp.finfo(jnp.float32).eps
  both_nonzero = sigma[..., 1:] > tol
  gaps = jnp.where(both_nonzero, sigma[..., :-1] - sigma[..., 1:], jnp.inf)
  kappa = jnp.min(gaps, axis=-1) if gaps.shape[-1] else jnp.full(sigma.shape[:-1], jnp.inf)
  if gap_scale == "relative":
    kappa = kappa / jnp.where(s_max[..., 0] > 0, s_max[..., 0], 1.0)
  return kappa


def scale_by_mimuon(
  beta: float = 0.05,
  tau: float = 1e-6,
  gap: str = "svd",
  gap_scale: str = "relative",
  method: str = "newton_schulz",
  ns_steps: int = 5,
  scale: str = "none",
  mu_dtype: Any | None = None,
  owner_layout: bool | None = None,
  gap_every: int = 1,
) -> optax.GradientTransformation:
  """MiMuon's direction (module docstring): s·msign(M) where κ ≥ τ, M elsewhere.

  Args:
    beta: β, the weight of the new gradient (0.05 ≈ Muon's momentum 0.95).
    tau: the gap threshold τ.
    gap: "svd" or "estimate" (module docstring).
    gap_scale: "relative" or "absolute".
    method: "newton_schulz" or "svd", how msign is computed.
    ns_steps: Newton–Schulz steps (``method="newton_schulz"``).
    scale: Muon's shape factor on the Muon branch ("shape", "rms_match", "none").
    mu_dtype: dtype of M (default float32).
    owner_layout: the gap and msign on same-shape matrices stacked, whole matrices per device
      (`optimizers.owner_layout`: no collective inside the SVD, the eigenvalue bisection or
      Newton–Schulz) under the ambient mesh; None: on under FSDP.
    gap_every: measure κ every k-th step, keep the branch in between (module docstring).
  """
  if not isinstance(gap_every, int) or isinstance(gap_every, bool) or gap_every < 1:
    raise ValueError(f"MiMuon gap_every must be an int >= 1, got {gap_every!r}.")
  for name, value, known in (
    ("gap", gap, GAP_ESTIMATORS),
    ("gap_scale", gap_scale, GAP_SCALES),
    ("method", method, ORTHOGONALIZE_METHODS),
    ("scale", scale, MUON_SCALES),
  ):
    if value not in known:
      raise ValueError(f"Unknown MiMuon {name} {value!r}; known: {known}.")
  dtype = state_dtype(mu_dtype)
  options = dict(steps=ns_steps) if method == "newton_schulz" else {}

  def init_fn(params):
    def counter(p):
      check_matrix(p, "MiMuon")
      return jnp.zeros(p.shape[:-2], jnp.int32)

    return ScaleByMiMuonState(
      count=jnp.zeros([], jnp.int32),
      mu=jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params),
      muon_steps=jax.tree.map(counter, params),
      take_muon=jax.tree.map(lambda p: jnp.ones(p.shape[:-2], bool), params),
    )

  def decide(m32):
    """Per matrix of a stack: whether its gap κ reaches τ (the Muon branch)."""
    return smallest_gap(singular_values(m32, gap), gap_scale, max(m32.shape[-2:])) >= tau

  def msign(m32):
    return orthogonalize(m32, method, **options) * shape_scale(m32.shape, scale)

  def branch(m32):
    """Per matrix of a stack: the direction and whether it took the Muon branch."""
    take_muon = decide(m32)
    return jnp.where(take_muon[..., None, None], msign(m32), m32), take_muon

  def select(m, sign, take):
    return jnp.where(take[..., None, None], sign, m)

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(
      lambda g, m: beta * g.astype(jnp.float32) + (1.0 - beta) * m.astype(jnp.float32),
      updates,
      state.mu,
    )
    # The gap and msign (pure functions of each matrix) go through the owner layout.
    per_matrix = lambda fn: owner_layout_lib.tree_map(fn, mu, enabled=owner_layout)
    if gap_every == 1:
      direction, take_muon = unzip(updates, per_matrix(branch), 2)
    else:
      check = state.count % gap_every == 0
      take_muon = jax.lax.cond(check, lambda: per_matrix(decide), lambda: state.take_muon)
      direction = jax.tree.map(select, mu, per_matrix(msign), take_muon)
    return (
      jax.tree.map(lambda d, g: d.astype(g.dtype), direction, updates),
      ScaleByMiMuonState(
        optax.safe_increment(state.count),
        jax.tree.map(lambda m: m.astype(dtype), mu),
        jax.tree.map(lambda n, t: n + t.astype(jnp.int32), state.muon_steps, take_muon),
        take_muon,
      ),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def mimuon(
  learning_rate: optax.ScalarOrSchedule,
  beta: float = 0.05,
  tau: float = 1e-6,
  gap: str = "svd",
  gap_scale: str = "relative",
  method: str = "newton_schulz",
  ns_steps: int = 5,
  scale: str = "none",
  weight_decay: float = 0.0,
  mask=None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], bool] | None = None,
  owner_layout: bool | None = None,
  gap_every: int = 1,
) -> optax.GradientTransformation:
  """MiMuon on the leaves ``routing`` selects, AdamW on the others.

  W ← (1 − ηλ)·W − η·d with d from `scale_by_mimuon` (its args). ``mask``
  selects the leaves that decay, on both sides; ``adam_*`` are the AdamW side's
  hyperparameters (``adam_learning_rate`` None: ``learning_rate``). ``owner_layout``,
  ``gap_every``: see `scale_by_mimuon`. Under `optax.inject_hyperparams` list ``routing``,
  ``mask`` (a function), ``ns_steps`` and ``gap_every`` in ``static_args``.
  """
  matrix_side = optax.chain(
    scale_by_mimuon(
      beta, tau, gap, gap_scale, method, ns_steps, scale, mu_dtype, owner_layout, gap_every
    ),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
  adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  other_side = adamw_side(adam_lr, adam_b1, adam_b2, adam_eps, adam_weight_decay, mask, mu_dtype)
  return routed(matrix_side, other_side, routing)


def muon_branch_fraction(state):
  """Per matrix, the fraction of steps that took the Muon branch: a pytree like
  the MiMuon side's params (the AdamW leaves are empty optax.MaskedNode), each
  leaf of shape leaf.shape[:-2] (plus a leading seed axis if the state has one).
  0 before the first step."""
  mi = find_state(state, ScaleByMiMuonState, "mimuon")

  def fraction(steps):
    count = jnp.reshape(mi.count, mi.count.shape + (1,) * (steps.ndim - mi.count.ndim))
    return steps / jnp.maximum(count, 1)

  return jax.tree.map(fraction, mi.muon_steps)


DOMAINS: dict[str, domains.Domain] = {
  "beta": domains.interval(0, 1, low_closed=False, high_closed=True),
  "tau": domains.nonnegative(),
  "gap": domains.one_of(GAP_ESTIMATORS),
  "gap_scale": domains.one_of(GAP_SCALES),
  "method": domains.one_of(ORTHOGONALIZE_METHODS),
  "ns_steps": domains.integer(1),
  "scale": domains.one_of(MUON_SCALES),
  **ADAM_DOMAINS,
  "mu_dtype": domains.DTYPE,
  "routing": ROUTING_DOMAIN,
  "owner_layout": domains.optional(domains.boolean()),
  "gap_every": domains.integer(1),
}
