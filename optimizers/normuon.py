"""NorMuon: Muon followed by a per-neuron second-moment normalization.

Li, Liu, Liang, Chen, Zhao, "NorMuon: Making Muon more efficient and scalable"
(arXiv:2510.05491); the default follows the authors' code (github.com/zichongli5/
NorMuon, normuon.py, ``normuon_update``). For a weight W (out × in, the paper's
layout), with M, v zero at the start:

    M ← β·M + (1 − β)·G                      (lerp, no bias correction)
    u = (1 − β)·G + β·M                      (Nesterov; u = M without it)
    O = NS5(u)                               (Muon's quintic Newton–Schulz)
    v ← β₂·v + (1 − β₂)·mean_in(O ⊙ O)       (one value per output row)
    Ô = O / (√v + ε)
    form="code":  Ô ← Ô · ‖O‖_F / (‖Ô‖_F + ε) · √max(1, out/in)
    form="paper": Ô ← Ô · 0.2·√(out·in) / (‖Ô‖_F + ε)
    W ← (1 − ηλ)·W − η·Ô

So the code form keeps Muon's update norm (‖O‖_F, times Muon's shape factor) and
only redistributes it across output units; the paper form sets RMS(update) =
0.2·η (the AdamW-matching scale of Liu et al., arXiv:2502.16982). ε = 1e−10 as
in the code, used in both divisions. The authors run NS5 in bf16; here it runs
in f32 (`optimizers.orthogonalization.newton_schulz`).

Layout: a flax kernel is (..., in, out) = Wᵀ, so "mean over the input axis, one
value per output row of W" is the mean over axis −2, one value per column of
the kernel: v has shape (..., 1, out). Leading axes are stacked matrices, one
statistic per matrix. Only the leaves `default_muon_routing` selects get
NorMuon; the others get AdamW, as in `optimizers.muon.muon`.
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers import owner_layout as owner_layout_lib
from optimizers.orthogonalization import newton_schulz
from optimizers.zoo_common import (
  ADAM_DOMAINS,
  ROUTING_DOMAIN,
  adamw_side,
  check_matrix,
  routed,
  state_dtype,
  unzip,
)

NORMUON_FORMS = ("code", "paper")

IMPLICIT_BIAS_NOTE = (
  "No Lion-K ball follows: the per-output-unit normalization by the running statistic v makes "
  "the direction depend on the optimizer's history, so it is not ∇K of one convex K of the "
  "momentum, and decoupled decay gives only the crude bound ‖W‖_F ≤ ‖update‖_F/λ "
  "(‖O‖_F·√max(1, out/in) in the code form, 0.2·√(out·in) in the paper form)."
)


class ScaleByNorMuonState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # M, the lerp momentum, like the params.
  nu: optax.Updates  # v, (..., 1, fan_out) float32: one second moment per output unit.


def _frobenius(x):
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))


def normuon_direction(o, nu, beta2, form: str, eps: float):
  """The normalized direction Ô from an orthogonalized O (…, in, out), and the
  new v. Shared with `optimizers.sf_normuon` (paper form, no Nesterov)."""
  nu = beta2 * nu + (1.0 - beta2) * jnp.mean(jnp.square(o), axis=-2, keepdims=True)
  o_hat = o / (jnp.sqrt(nu) + eps)
  fan_in, fan_out = o.shape[-2:]
  if form == "code":
    # Muon's shape factor √max(1, out/in): for the (in, out) kernel, out = shape[-1].
    scale = _frobenius(o) / (_frobenius(o_hat) + eps) * math.sqrt(max(1.0, fan_out / fan_in))
  else:
    scale = 0.2 * math.sqrt(fan_in * fan_out) / (_frobenius(o_hat) + eps)
  return o_hat * scale, nu


def scale_by_normuon(
  beta: float = 0.95,
  beta2: float = 0.95,
  nesterov: bool = True,
  ns_steps: int = 5,
  form: str = "code",
  eps: float = 1e-10,
  mu_dtype: Any | None = None,
  owner_layout: bool | None = None,
) -> optax.GradientTransformation:
  """NorMuon's direction Ô (module docstring) for every leaf, each a (stack of)
  (fan_in, fan_out) matrices; the learning rate and decay come after it.

  Args:
    beta: momentum decay β.
    beta2: decay β₂ of the per-output-unit second moment v.
    nesterov: orthogonalize (1 − β)·G + β·M instead of M.
    ns_steps: Newton–Schulz steps (Muon's quintic coefficients).
    form: "code" (the authors' Frobenius-preserving rescale, default) or
      "paper" (RMS(Ô) = 0.2).
    eps: ε of both divisions.
    mu_dtype: dtype of M (default float32, whatever the params).
    owner_layout: run NS5 in Muon's owner layout (`optimizers.muon.muon`'s argument).
  """
  if form not in NORMUON_FORMS:
    raise ValueError(f"Unknown NorMuon form {form!r}; known: {NORMUON_FORMS}.")
  dtype = state_dtype(mu_dtype)

  def init_fn(params):
    def nu_zeros(p):
      check_matrix(p, "NorMuon")
      return jnp.zeros(p.shape[:-2] + (1, p.shape[-1]), jnp.float32)

    return ScaleByNorMuonState(
      count=jnp.zeros([], jnp.int32),
      mu=jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params),
      nu=jax.tree.map(nu_zeros, params),
    )

  def momentum(g, m):
    g32 = g.astype(jnp.float32)
    m32 = beta * m.astype(jnp.float32) + (1.0 - beta) * g32
    return m32, ((1.0 - beta) * g32 + beta * m32 if nesterov else m32)

  # Only NS5 (a pure function of each matrix) goes through the owner layout; v's per-row
  # statistic and the rescale stay per leaf, in the leaf's own sharding.
  orthogonalize = functools.partial(owner_layout_lib.tree_map, enabled=owner_layout)

  def leaf_direction(g, o, nu):
    direction, nu = normuon_direction(o, nu, beta2, form, eps)
    return direction.astype(g.dtype), nu

  def update_fn(updates, state, params=None):
    del params
    m32, u = unzip(updates, jax.tree.map(momentum, updates, state.mu), 2)
    o = orthogonalize(lambda x: newton_schulz(x, steps=ns_steps), u)
    direction, nu = unzip(updates, jax.tree.map(leaf_direction, updates, o, state.nu), 2)
    mu = jax.tree.map(lambda m: m.astype(dtype), m32)
    return direction, ScaleByNorMuonState(optax.safe_increment(state.count), mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def normuon(
  learning_rate: optax.ScalarOrSchedule,
  beta: float = 0.95,
  beta2: float = 0.95,
  nesterov: bool = True,
  ns_steps: int = 5,
  form: str = "code",
  eps: float = 1e-10,
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
) -> optax.GradientTransformation:
  """NorMuon on the leaves ``routing`` selects, AdamW on the others.

  W ← (1 − ηλ)·W − η·Ô with Ô from `scale_by_normuon` (defaults: the authors'
  lr 0.02, β 0.95, β₂ 0.95, λ 0).

  Args:
    learning_rate: η of the NorMuon side (a float or an optax schedule).
    beta, beta2, nesterov, ns_steps, form, eps: see `scale_by_normuon`.
    weight_decay: λ of the NorMuon side, multiplied by η.
    mask: which leaves decay (a pytree of bools or a function of the params, as
      optax), on both sides.
    adam_learning_rate: AdamW's η (default: ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay: AdamW's hyperparameters.
    mu_dtype: dtype of both sides' first moments (NorMuon's default: float32).
    routing: ``routing(path, leaf) -> bool``, True for NorMuon; None is
      `default_muon_routing`. Under `optax.inject_hyperparams` list ``routing``,
      ``mask`` (when a function) and ``ns_steps`` in ``static_args``.
    owner_layout: Newton–Schulz on same-shape matrices stacked, whole matrices per device
      (`optimizers.owner_layout`: no collective inside the iteration) under the ambient
      mesh (`jax.set_mesh`); None: on when that mesh has an "fsdp" axis of size > 1.
      The same update up to rounding; without a mesh it changes nothing.
  """
  matrix_side = optax.chain(
    scale_by_normuon(beta, beta2, nesterov, ns_steps, form, eps, mu_dtype, owner_layout),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
  adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  other_side = adamw_side(adam_lr, adam_b1, adam_b2, adam_eps, adam_weight_decay, mask, mu_dtype)
  return routed(matrix_side, other_side, routing)


DOMAINS: dict[str, domains.Domain] = {
  "beta": domains.DECAY,
  "beta2": domains.DECAY,
  "nesterov": domains.boolean(),
  "ns_steps": domains.integer(1),
  "form": domains.one_of(NORMUON_FORMS),
  "eps": domains.positive(),
  **ADAM_DOMAINS,
  "mu_dtype": domains.DTYPE,
  "owner_layout": domains.optional(domains.boolean()),
  "routing": ROUTING_DOMAIN,
}
