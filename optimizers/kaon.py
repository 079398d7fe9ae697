"""Kaon (Shumaylov et al. 2026): Muon with a chaotic matrix map instead of U·Vᵀ.

From "Muon is Not That Special" (Shumaylov et al., arXiv:2605.11181). No authors'
code was found: this follows the reconstruction in the zoo's reference sheet
(confidence B/C), and the uncertain constants are options (``gain``, ``divisor``,
``steps``). Muon's momentum and Nesterov (`optimizers.muon`), then a map on the
momentum mix u:

    m_t = β·m_{t−1} + (1 − β)·g_t
    u_t = β·m_t + (1 − β)·g_t              (Nesterov; u_t = m_t without it)
    X_0 = u_t / ‖u_t‖_F                    (on the wide orientation, m ≤ n)
    X_{k+1} = a·(I − X_k X_kᵀ)²·X_k         (k < steps; a = gain = 4.1, steps = 5)
    O_t = X_steps / d                       (d = divisor = 1.175)
    θ_t = θ_{t−1} − η·(s·O_t + λ·θ_{t−1})

On singular values this is the logistic-like map σ ↦ a·σ·(1 − σ²)², with the
singular vectors kept, so Σ is scrambled ("random") rather than set to 1 as in
Muon. Its maximum on [0, 1] is a·(16/25)/√5 ≈ 1.1735 at σ = 1/√5, and it maps
[0, 1.1735] into itself, so with the defaults ‖O‖₂ < 1; zero singular values stay
zero (in f32, rounding-level ones grow by at most f'(0)^steps = 4.1⁵ ≈ 1.2e3: the map
is chaotic, so f32 and f64 agree to ~1e-5, not 1e-7); O(P·G·Q) = P·O(G)·Q for
orthogonal P, Q. s is Muon's per-matrix ``scale``
("none" by default: the reconstruction has none).

Layout: (I − XXᵀ)²X = X(I − XᵀX)², so the map is transpose-equivariant and the flax
(fan_in, fan_out) layout gives the transpose of the paper's (out, in) update; the
wide orientation only makes the Gram matrix the small one. Leaves (L, m, n) are L
matrices. Leaves `default_muon_routing` (or ``routing``) does not select go to AdamW.

`scale_by_muon_momentum_map` (Muon's momentum, then any per-matrix map) is shared
with `optimizers.freon`, the paper's other variant.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree as otu

from optimizers import domains
from optimizers import owner_layout as owner_layout_lib
from optimizers.muon import (
  MUON_SCALES,
  scale_by_shape,
  shape_scale,
)
from optimizers.orthogonalization import newton_schulz
from optimizers.zoo_common import ADAM_DOMAINS, ROUTING_DOMAIN, adamw_side, routed

KAON_GAIN = 4.1
KAON_DIVISOR = 1.175


def kaon_map(
  x: jax.Array,
  steps: int = 5,
  gain: float = KAON_GAIN,
  divisor: float = KAON_DIVISOR,
  eps: float = 1e-7,
) -> jax.Array:
  """Kaon's map of every matrix in ``x`` (..., m, n), in f32; same shape, f32.

  a·(I − XXᵀ)²X = a·X − 2a·(XXᵀ)X + a·(XXᵀ)²X is one quintic Newton–Schulz step
  with coefficients (a, −2a, a), so with concrete ``steps`` and ``gain`` the map is
  `optimizers.orthogonalization.newton_schulz` with that triple: Muon's code, and its
  Gram form on rectangular matrices (2.4× fewer FLOPs on 768×3072). ``steps`` (or
  ``gain``, ``divisor``) may be traced, as `optax.inject_hyperparams` makes them; the
  map then runs the standard form in a `jax.lax.fori_loop`, so it needs no static
  arguments. ``eps`` is added to the Frobenius norm so that 0 maps to 0.
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  try:
    static = int(steps), float(gain), float(divisor)
  except (jax.errors.ConcretizationTypeError, TypeError):
    static = None  # Traced hyperparameters (inject_hyperparams under jit).
  if static is not None:
    steps, gain, divisor = static
    return newton_schulz(x, steps, (gain, -2 * gain, gain), eps=eps) / divisor
  transpose = x.shape[-2] > x.shape[-1]
  x_MxN = jnp.swapaxes(x, -1, -2) if transpose else x
  norm = jnp.sqrt(jnp.sum(jnp.square(x_MxN), axis=(-2, -1), keepdims=True))
  x_MxN = x_MxN / (norm + eps)
  eye_MxM = jnp.eye(x_MxN.shape[-2], dtype=x_MxN.dtype)

  def step(_, x_MxN):
    b_MxM = eye_MxM - x_MxN @ jnp.swapaxes(x_MxN, -1, -2)
    return gain * (b_MxM @ (b_MxM @ x_MxN))

  x_MxN = jax.lax.fori_loop(0, steps, step, x_MxN) / divisor
  return jnp.swapaxes(x_MxN, -1, -2) if transpose else x_MxN


class ScaleByMuonMomentumState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # m_t per leaf, (..., m, n) like the params.


def scale_by_muon_momentum_map(
  matrix_map: Callable[[jax.Array], jax.Array],
  beta: float = 0.95,
  nesterov: bool = True,
  mu_dtype: Any | None = None,
  who: str = "this optimizer",
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """``matrix_map(u)`` with Muon's momentum: m ← β·m + (1 − β)·g, u = β·m + (1 − β)·g
  (Nesterov) or u = m. The momentum mix is formed in f32 and the map's output cast
  to the update's dtype; m is kept in ``mu_dtype`` (default float32). Every leaf
  must have rank ≥ 2 (checked at init). ``matrix_map`` (a pure function of each matrix)
  runs in the owner layout when ``owner_layout`` (None: under FSDP; `optimizers.owner_layout`):
  same-shape matrices stacked, whole matrices per device, no collective inside its iteration."""
  mu_dtype = jnp.dtype(jnp.float32 if mu_dtype is None else mu_dtype)

  def init_fn(params):
    for leaf in jax.tree.leaves(params):
      if jnp.ndim(leaf) < 2:
        raise ValueError(
          f"{who} needs matrices (rank >= 2); got a leaf of shape {jnp.shape(leaf)}: "
          "route it to AdamW (the routing argument)."
        )
    return ScaleByMuonMomentumState(
      jnp.zeros([], jnp.int32), otu.zeros_like(params, dtype=mu_dtype)
    )

  def update_fn(updates, state, params=None):
    del params
    f32 = lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mu = jax.tree.map(lambda g, m: beta * f32(m) + (1 - beta) * f32(g), updates, state.mu)
    mix = jax.tree.map(lambda g, m: beta * m + (1 - beta) * f32(g), updates, mu) if nesterov else mu
    directions = owner_layout_lib.tree_map(matrix_map, mix, enabled=owner_layout)
    directions = jax.tree.map(lambda g, d: d.astype(g.dtype), updates, directions)
    mu = jax.tree.map(lambda m: m.astype(mu_dtype), mu)
    return directions, ScaleByMuonMomentumState(optax.safe_increment(state.count), mu)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_kaon(
  beta: float = 0.95,
  nesterov: bool = True,
  steps: int = 5,
  gain: float = KAON_GAIN,
  divisor: float = KAON_DIVISOR,
  mu_dtype: Any | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Kaon's direction O = `kaon_map`(u) of Muon's momentum mix u (module docstring)."""
  return scale_by_muon_momentum_map(
    lambda u: kaon_map(u, steps, gain, divisor), beta, nesterov, mu_dtype, "Kaon", owner_layout
  )


def kaon(
  learning_rate: optax.ScalarOrSchedule,
  beta: float = 0.95,
  nesterov: bool = True,
  steps: int = 5,
  gain: float = KAON_GAIN,
  divisor: float = KAON_DIVISOR,
  weight_decay: float = 0.0,
  mask=None,
  scale: str = "none",
  mu_dtype: Any | None = None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b1: float = 0.9,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  routing: Callable[[Any, Any], bool] | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """Kaon on the leaves ``routing`` selects, AdamW on the others.

  θ ← θ − η·(s·kaon_map(u) + λ·θ) (module docstring).

  Args:
    learning_rate: η of the Kaon side (a float or an optax schedule).
    beta, nesterov: Muon's momentum.
    steps, gain, divisor: the map X ← gain·(I − XXᵀ)²X, ``steps`` times, then / divisor.
    weight_decay: λ of the Kaon side, multiplied by η.
    mask: which leaves decay (a pytree of bools or a function of the params), on
      both sides, as `optimizers.muon.muon`'s ``weight_decay_mask``.
    scale: Muon's per-matrix factor s ("shape", "rms_match" or "none").
    mu_dtype: dtype of the momenta (Kaon's default: float32).
    adam_learning_rate: AdamW's η (default: ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay: AdamW's hyperparameters.
    routing: ``routing(path, leaf) -> bool``, True for Kaon; None is
      `optimizers.muon.default_muon_routing`. Under `optax.inject_hyperparams` list
      it in ``static_args`` (``steps`` may stay numeric).
    owner_layout: the map on same-shape matrices stacked, whole matrices per device
      (`optimizers.owner_layout`: no collective inside its Newton–Schulz steps) under the
      ambient mesh; None: on under FSDP.
  """
  shape_scale((1, 1), scale)  # Fail on an unknown name now, not at update.
  matrix_side = optax.chain(
    scale_by_kaon(beta, nesterov, steps, gain, divisor, mu_dtype, owner_layout),
    scale_by_shape(scale),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
  adam_side = adamw_side(
    learning_rate if adam_learning_rate is None else adam_learning_rate,
    adam_b1,
    adam_b2,
    adam_eps,
    adam_weight_decay,
    mask,
    mu_dtype,
  )
  return routed(matrix_side, adam_side, routing)  # Muon's labels: Muon's state tree shape.


# The values a config may give each hyperparameter (optimizers.domains).
DOMAINS = {
  "beta": domains.DECAY,
  "nesterov": domains.boolean(),
  "steps": domains.integer(1),
  "gain": domains.positive(),
  "divisor": domains.positive(),
  "scale": domains.one_of(MUON_SCALES),
  "mu_dtype": domains.DTYPE,
  **ADAM_DOMAINS,
  "routing": ROUTING_DOMAIN,
  "owner_layout": domains.optional(domains.boolean()),
}

IMPLICIT_BIAS_NOTE = (
  "None known: Kaon's map scrambles the singular values (σ ↦ 4.1·σ(1 − σ²)², iterated), so "
  "it is not the gradient of a convex K and Lion-K's constraint argument does not apply."
)
