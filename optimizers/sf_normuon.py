"""SF-NorMuon: schedule-free iterates around NorMuon's paper-form direction.

Apte, Deshpande, Kumar, Chakrabarti, Kim, "Anytime Training with Schedule-Free
Spectral Optimization" (arXiv:2605.23061). No authors' code was found: this
follows a reconstruction (OPTIMIZERS.md, confidence B), on top of schedule-free
learning (Defazio et al., "The Road Less Scheduled", arXiv:2405.15682). Three
iterates, all kept in float32: z (fast), x (average, evaluated), y (where the
gradient is taken). Per step t = 1, 2, … with η_t the learning rate:

    y = (1 − β₁)·z + β₁·x                    (the params the trainer holds)
    g = ∇f(y)
    M ← μ·M + (1 − μ)·g                      (explicit momentum, no Nesterov)
    P = NS5(M)
    v ← β₂·v + (1 − β₂)·mean_in(P ⊙ P)       (one value per output unit)
    P̂ = P / (√v + ε),   η̂ = 0.2·η_t·√(mn) / ‖P̂‖_F
    z ← z − η_t·λ·z − η̂·P̂                   (weight decay at z, not at y)
    c = η_t² / Σ_{s≤t} η_s²,   x ← (1 − c)·x + c·z

(ε also guards ‖P̂‖_F, so a zero gradient gives a zero step.) Layout: flax
kernels are (..., in, out) = Wᵀ, so the per-output-row statistic is one value
per column of the kernel (mean over axis −2), as in `optimizers.normuon`.

Leaves that are not hidden matrices (`default_muon_routing`) get schedule-free
AdamW with its decay at z as well: z ← z − η_t·(g/(√v̂ + ε) + λ·z), v̂ the
bias-corrected second moment (optax's schedule_free_adamw base, no first
moment: β₁'s interpolation plays that part).

Which iterate is which: the params the optimizer hands back (and the trainer
checkpoints and differentiates) are y; the state holds z and x. Evaluate at x:
``evaluation_params(params, state)``. For β₁ > 0 it equals optax's
``schedule_free_eval_params(state, params)`` formula (y − (1 − β₁)·z)/β₁, but x
is stored rather than recovered from y, so β₁ = 0 (y = z) works and bf16 params
do not round x. With λ = 0, no warmup and constant η, x_t is the uniform
average of z_1 … z_t.

Differences from optax.contrib.schedule_free: it hands its base optimizer y,
so a decay inside it would decay y; here the base (NorMuon / AdamW chains) is
handed z. optax weights the average by the running max of η (Defazio's code);
here by η_t itself, as the reconstruction — the same for any non-decreasing
schedule, which is what schedule-free is run with. The warmup of
``warmup_steps`` is η_t = η·min(1, t/T) with t counted from 1 (as optax's
schedule_free, whose first step is not 0); the factory's shared warmup_steps
(a schedule passed as learning_rate) starts at 0 instead. Another secondary
source decays z by the base η instead of η_t during warmup; here it is η_t.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers.normuon import scale_by_normuon
from optimizers.zoo_common import ADAM_DOMAINS, ROUTING_DOMAIN, find_state, routed

IMPLICIT_BIAS_NOTE = (
  "None known: the NorMuon direction is not ∇K of a convex K, so only the crude bound "
  "‖z‖_F ≤ 0.2·√(mn)/λ from the decay at z follows, and x and y, convex combinations of "
  "the z's, inherit it."
)


class ScheduleFreeNorMuonState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  lr_sq_sum: jax.Array  # shape (), float32: Σ_{s≤t} η_s².
  z: optax.Params  # the fast iterate, float32.
  x: optax.Params  # the average, float32: evaluate here.
  base_state: optax.OptState  # the NorMuon / AdamW chains that move z.


def _with_warmup(learning_rate: optax.ScalarOrSchedule, warmup_steps) -> optax.Schedule:
  """η_t = η(t)·min(1, t/T) for the t-th step (t from 1); T = 0: no warmup.
  jnp only, so T may be a traced value under optax.inject_hyperparams."""

  def schedule(count):
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    if isinstance(warmup_steps, int) and warmup_steps == 0:
      return lr
    ramp = jnp.minimum(1.0, (count + 1) / jnp.maximum(warmup_steps, 1))
    return lr * jnp.where(warmup_steps > 0, ramp, 1.0)

  return schedule


def schedule_free_at_z(
  base: optax.GradientTransformation, learning_rate: optax.Schedule, b1: float
) -> optax.GradientTransformation:
  """The schedule-free iterates (module docstring) around ``base``, which maps
  the gradient at y to the step of z and is handed z as its params (so its
  weight decay decays z). ``learning_rate`` (a schedule of the step count) only
  sets the averaging weights c; ``base`` applies its own."""

  def init_fn(params):
    z = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32).copy(), params)
    return ScheduleFreeNorMuonState(
      count=jnp.zeros([], jnp.int32),
      lr_sq_sum=jnp.zeros([], jnp.float32),
      z=z,
      x=jax.tree.map(jnp.copy, z),
      base_state=base.init(z),
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("sf_normuon needs the params (y) in update(grads, state, params).")
    grads = jax.tree.map(lambda g: g.astype(jnp.float32), updates)
    step_z, base_state = base.update(grads, state.base_state, state.z)
    z = jax.tree.map(lambda zi, dz: zi + dz.astype(jnp.float32), state.z, step_z)
    lr_sq = jnp.square(jnp.asarray(learning_rate(state.count), jnp.float32))
    lr_sq_sum = state.lr_sq_sum + lr_sq
    # Before the first nonzero η (a warmup from 0) z has not moved: keep x = z.
    c = jnp.where(lr_sq_sum > 0, lr_sq / jnp.where(lr_sq_sum > 0, lr_sq_sum, 1.0), 0.0)
    x = jax.tree.map(lambda xi, zi: (1.0 - c) * xi + c * zi, state.x, z)
    new_updates = jax.tree.map(
      lambda p, xi, zi: ((1.0 - b1) * zi + b1 * xi - p.astype(jnp.float32)).astype(p.dtype),
      params,
      x,
      z,
    )
    new_state = ScheduleFreeNorMuonState(
      optax.safe_increment(state.count), lr_sq_sum, z, x, base_state
    )
    return new_updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_sf_normuon(
  mu: float = 0.8,
  b2: float = 0.95,
  ns_steps: int = 5,
  eps: float = 1e-8,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  """SF-NorMuon's matrix direction 0.2·√(mn)·P̂/‖P̂‖_F: `scale_by_normuon` in
  its paper form, momentum μ, no Nesterov (the schedule-free interpolation
  already mixes the gradient in)."""
  return scale_by_normuon(
    beta=mu, beta2=b2, nesterov=False, ns_steps=ns_steps, form="paper", eps=eps, mu_dtype=mu_dtype
  )


def sf_normuon(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.95,
  mu: float = 0.8,
  weight_decay: float = 0.05,
  warmup_steps: int = 0,
  eps: float = 1e-8,
  ns_steps: int = 5,
  mask=None,
  adam_learning_rate: optax.ScalarOrSchedule | None = None,
  adam_b2: float = 0.95,
  adam_eps: float = 1e-8,
  adam_weight_decay: float = 0.0,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], bool] | None = None,
) -> optax.GradientTransformation:
  """Schedule-free NorMuon on the hidden matrices, schedule-free AdamW on the
  rest, one shared set of iterates (module docstring).

  Args:
    learning_rate: η of the matrix side (a float or a schedule without decay);
      it also sets the averaging weights c.
    b1: β₁, the interpolation y = (1 − β₁)·z + β₁·x (0: y = z).
    b2: β₂ of NorMuon's per-output-unit second moment.
    mu: μ, the momentum of the matrix side (μ = 0 is reported to degrade).
    weight_decay: λ of the matrix side, applied at z and multiplied by η_t.
    warmup_steps: T of η_t = η·min(1, t/T) (t from 1), on both sides; 0: none.
    eps: ε of P̂ = P/(√v + ε).
    ns_steps: Newton–Schulz steps.
    mask: which leaves decay (a pytree of bools or a function of the params).
    adam_learning_rate: the AdamW side's η (default: ``learning_rate``).
    adam_b2, adam_eps, adam_weight_decay: the schedule-free AdamW side's
      second-moment decay, ε and λ (decay at z).
    mu_dtype: dtype of the matrix momentum (default float32).
    routing: ``routing(path, leaf) -> bool``, True for the NorMuon side.
      Under `optax.inject_hyperparams` list ``routing``, ``mask`` (a function)
      and ``ns_steps`` in ``static_args``.
  """
  lr = _with_warmup(learning_rate, warmup_steps)
  adam_lr = lr if adam_learning_rate is None else _with_warmup(adam_learning_rate, warmup_steps)
  matrix_side = optax.chain(
    scale_by_sf_normuon(mu, b2, ns_steps, eps, mu_dtype),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(lr),
  )
  other_side = optax.chain(
    optax.scale_by_rms(decay=adam_b2, eps=adam_eps, eps_in_sqrt=False, bias_correction=True),
    optax.add_decayed_weights(adam_weight_decay, mask),
    optax.scale_by_learning_rate(adam_lr),
  )
  return schedule_free_at_z(routed(matrix_side, other_side, routing), lr, b1)


def evaluation_params(params, state):
  """x, the average iterate, in the dtypes of ``params`` (which hold y): the
  params to evaluate and report. ``state`` is the optimizer state as the
  trainer holds it (wrappers and a leading seed axis are fine). Note the order
  (params, state): optax's schedule_free_eval_params takes (state, params)."""
  sf = find_state(state, ScheduleFreeNorMuonState, "sf_normuon")
  return jax.tree.map(lambda p, xi: xi.astype(jnp.asarray(p).dtype), params, sf.x)


DOMAINS: dict[str, domains.Domain] = {
  "b1": domains.interval(0, 1, high_closed=True),
  "b2": domains.DECAY,
  "mu": domains.DECAY,
  "warmup_steps": domains.integer(0),
  "eps": domains.positive(),
  "ns_steps": domains.integer(1),
  **{k: v for k, v in ADAM_DOMAINS.items() if k != "adam_b1"},
  "mu_dtype": domains.DTYPE,
  "routing": ROUTING_DOMAIN,
}
