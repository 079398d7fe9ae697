"""Dion: a low-rank orthonormalized update by one power-iteration step per step.

Ahn et al., "Dion: Distributed Orthonormalized Updates" (arXiv:2504.05295); the
rule is that of the authors' single-device code (github.com/microsoft/dion,
dion/dion_simple.py, ``dion_update``). For W (out × in, the paper's layout) with
state M (out × in, zero at the start) and Q (in × r, random at the start):

    M ← M + G                                (M accumulates; decay by feedback)
    P = QR(M·Q).Q                            (out × r, orthonormal columns)
    R = Mᵀ·P                                 (in × r)
    M ← M − (1 − μ)·P·Rᵀ                     (error feedback)
    Q ← R / (‖R‖_col + ε)                    (unit columns)
    W ← (1 − ηλ)·W − η·√(out/in)·P·Qᵀ

PᵀP = I; at full rank P·Rᵀ = P·Pᵀ·M = M, so the feedback is M ← μ·M, Muon's
momentum. For a fixed M, repeated steps are subspace (power) iteration on
M·Mᵀ, and P·Qᵀ → U_r·V_rᵀ, the rank-r truncated polar factor of M. The scale
is √(out/in) as in the code (not Muon's √max(1, out/in)).

Layout: a flax kernel is (..., in, out) = Wᵀ. M is stored as the kernel,
(..., in, out); Q keeps the paper's meaning, (..., in, r), so the products are
P = QR(Mᵀ_kernel·Q) and the kernel's step is (P·Qᵀ)ᵀ = Q·Pᵀ. Leading axes are
stacked matrices, each with its own Q.

``rank``: an int ≥ 1 is an absolute rank, clipped to min(in, out) per matrix
(the authors' convention, default 768 there); a float in (0, 1] is a fraction
of min(in, out), r = ⌈rank·min(in, out)⌉ (the paper's "rank 1/4"). So 1 means
rank one and 1.0 full rank. Q starts as standard normal draws from
PRNGKey(seed) folded with the leaf's index in the tree: deterministic, and the
same for every seed of a vmapped init. QR is jnp.linalg.qr in float32.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import domains, lapack
from optimizers import owner_layout as owner_layout_lib
from optimizers.zoo_common import (
  ADAM_DOMAINS,
  ROUTING_DOMAIN,
  adamw_side,
  check_matrix,
  routed,
  state_dtype,
  unzip,
)

IMPLICIT_BIAS_NOTE = (
  "No Lion-K ball follows: P·Qᵀ is a low-rank power-iteration estimate of the polar factor "
  "carried in the state with error feedback, not ∇K of one convex K of the momentum, so "
  "decoupled decay gives only the crude bound σ_max(W) ≤ √(out/in)·‖Q‖₂/λ ≤ √(out/in)·√r/λ."
)


class ScaleByDionState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # M, (..., in, out) like the kernel.
  q: optax.Updates  # Q, (..., in, r) float32: the power-iteration basis of the input side.


def _is_rank(v) -> bool:
  if isinstance(v, bool):
    return False
  if isinstance(v, int):
    return v >= 1
  return isinstance(v, float) and 0 < v <= 1


def dion_rank(rank: int | float, shape) -> int:
  """The rank r of a (..., in, out) matrix for ``rank`` (module docstring)."""
  if not _is_rank(rank):
    raise ValueError(f"Dion rank must be an int >= 1 or a float in (0, 1], got {rank!r}.")
  short = min(shape[-2:])
  if isinstance(rank, int):
    return min(rank, short)
  return max(1, min(short, math.ceil(rank * short)))


def power_iteration_step(m_IxO, q_IxR, mu, eps: float = 1e-8):
  """One Dion step on the accumulated M (kernel layout, float32) and Q: returns
  P (..., out, r) with PᵀP = I, the new Q (..., in, r) and M after the error
  feedback. The step of the kernel is √(out/in)·Q·Pᵀ."""
  p_OxR, _ = lapack.qr(jnp.swapaxes(m_IxO, -1, -2) @ q_IxR)
  r_IxR = m_IxO @ p_OxR  # R = Mᵀ·P in the paper's layout.
  m_IxO = m_IxO - (1.0 - mu) * (r_IxR @ jnp.swapaxes(p_OxR, -1, -2))
  q_IxR = r_IxR / (jnp.linalg.norm(r_IxR, axis=-2, keepdims=True) + eps)
  return p_OxR, q_IxR, m_IxO


def scale_by_dion(
  rank: int | float = 0.25,
  mu: float = 0.95,
  eps: float = 1e-8,
  seed: int = 0,
  mu_dtype: Any | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Dion's direction √(out/in)·(P·Qᵀ)ᵀ (module docstring) for every leaf.

  Args:
    rank: an int (absolute, clipped) or a float fraction of min(in, out).
    mu: μ, the error-feedback factor (the momentum at full rank).
    eps: ε of the column normalization of R.
    seed: the PRNG seed of Q's initialization.
    mu_dtype: dtype of M (default float32).
    owner_layout: the power-iteration step (M, Q and the QR) on same-shape matrices stacked,
      whole matrices per device (`optimizers.owner_layout`) under the ambient mesh; None: on
      under FSDP. Without it GSPMD partitions the products on the sharded M, all-reduces the
      r-column P and R and repeats the QR on every device; measured on 8 virtual devices
      (tests/zoo_owner_layout_check.py) the owner layout delivers fewer bytes (201 against
      206 KB per device) and splits the QR over the devices.
  """
  dion_rank(rank, (1, 1))  # Fail on a bad rank now, not at init.
  dtype = state_dtype(mu_dtype)

  def init_fn(params):
    leaves, treedef = jax.tree.flatten(params)
    key = jax.random.PRNGKey(seed)

    def q0(i, p):
      check_matrix(p, "Dion")
      shape = p.shape[:-1] + (dion_rank(rank, p.shape),)
      return jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)

    q = jax.tree.unflatten(treedef, [q0(i, p) for i, p in enumerate(leaves)])
    return ScaleByDionState(
      count=jnp.zeros([], jnp.int32),
      mu=jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params),
      q=q,
    )

  def matrix_update(m_IxO, q):
    """Per matrix of a stack: the direction, M after the feedback and the new Q."""
    p_OxR, q_IxR, m_IxO = power_iteration_step(m_IxO, q, mu, eps)
    fan_in, fan_out = m_IxO.shape[-2:]
    direction = math.sqrt(fan_out / fan_in) * (q_IxR @ jnp.swapaxes(p_OxR, -1, -2))
    return direction, m_IxO, q_IxR

  def update_fn(updates, state, params=None):
    del params
    m = jax.tree.map(lambda g, m: m.astype(jnp.float32) + g.astype(jnp.float32), updates, state.mu)
    # The power-iteration step (QR included) on whole matrices: the owner layout.
    out = owner_layout_lib.tree_map(matrix_update, m, state.q, enabled=owner_layout)
    direction, mu_new, q = unzip(updates, out, 3)
    return (
      jax.tree.map(lambda d, g: d.astype(g.dtype), direction, updates),
      ScaleByDionState(
        optax.safe_increment(state.count), jax.tree.map(lambda x: x.astype(dtype), mu_new), q
      ),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def dion(
  learning_rate: optax.ScalarOrSchedule,
  rank: int | float = 0.25,
  mu: float = 0.95,
  eps: float = 1e-8,
  seed: int = 0,
  weight_decay: float = 0.01,
  mask=None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], bool] | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Dion on the leaves ``routing`` selects, AdamW on the others.

  W ← (1 − ηλ)·W − η·√(out/in)·P·Qᵀ (defaults: the authors' μ 0.95, λ 0.01).
  ``rank``, ``mu``, ``eps``, ``seed``, ``mu_dtype``, ``owner_layout``: see `scale_by_dion`.
  ``mask`` selects the leaves that decay, on both sides; ``adam_*`` are the
  AdamW side's hyperparameters (``adam_learning_rate`` None: ``learning_rate``).
  Under `optax.inject_hyperparams` list ``rank`` (it sets Q's shape),
  ``routing`` and ``mask`` (a function) in ``static_args``.
  """
  matrix_side = optax.chain(
    scale_by_dion(rank, mu, eps, seed, mu_dtype, owner_layout),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
  adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  other_side = adamw_side(adam_lr, adam_b1, adam_b2, adam_eps, adam_weight_decay, mask, mu_dtype)
  return routed(matrix_side, other_side, routing)


DOMAINS: dict[str, domains.Domain] = {
  "rank": domains.Domain(_is_rank, "an int >= 1 (absolute rank) or a float in (0, 1] (fraction)"),
  "mu": domains.DECAY,
  "eps": domains.positive(),
  "seed": domains.integer(0),
  **ADAM_DOMAINS,
  "mu_dtype": domains.DTYPE,
  "routing": ROUTING_DOMAIN,
  "owner_layout": domains.optional(domains.boolean()),
}
