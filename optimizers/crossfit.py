"""Cross-fitted, bias-corrected AdamW: Adam's moments from separate microbatches.

Nayak et al., "Bias-Corrected Preconditioned Optimization for Language Model
Training" (arXiv:2605.20756; authors' code: github.com/fastino-ai/
preconditioner-bias-correction, ``BiasCorrectedAdamW`` in
src/bcopt/optimizers/adamw.py, the leave-one-out collector in
src/bcopt/collectors/loo_hybrid.py). AdamW's m̂/√v̂ multiplies two estimates
made from the same batch, so E[m̂·(1/√v̂)] ≠ E[m̂]·E[1/√v̂]; the modes remove
that coupling (cross-fitting) or the Jensen bias of 1/√v̂ (a delta-method
correction). A step's K microbatch gradients g_1…g_K (K = the trainer's
gradient-accumulation steps) come in as ``microbatch_grads`` (a leading K axis);
ḡ = mean_j g_j; bc₁ = 1 − β₁ᵗ, bc₂ = 1 − β₂ᵗ; v₋ = v_{t−1}:

    std   m ← β₁m + (1−β₁)ḡ,  v ← β₂v + (1−β₂)ḡ²              (optax.adamw; no K needed)
    cf    A = g_1…g_{K/2}, B = the rest: m from mean_A g, v from mean_B g² (K even)
    inv   std moments; p_j = √((β₂v₋ + (1−β₂)g_j²)/bc₂) over all j;
          Var(p̄) = sample variance of p_j / K (Welford's M2/(K(K−1)) in the code)
    full  cf moments; the p_j and Var(p̄) over the B microbatches only (one B: no correction)
    then  d = √(v/bc₂) + ε;  inv = max(0, 1/d − Var(p̄)/d³)  (inv, full; else 1/d);
          u = (m/bc₁)·inv
    loo   (dense matrices; the other leaves take std from ḡ) for each r:
          g₋ᵣ = (K·ḡ − g_r)/(K−1),  d_r = √(max(0, β₂v₋ + (1−β₂)g₋ᵣ²)/bc₂) + ε,
          m̂_r = (β₁m₋ + (1−β₁)g_r)/bc₁;  u₁ = mean_r m̂_r/d_r,  u₃ = mean_r m̂_r/d_r³,
          u = u₁ − Var_r(d_r)·u₃ (sample variance, /(K−1); ``jensen=False``: u = u₁),
          zero where u and u₁ differ in sign; the kept moments are std's
          (m ← β₁m + (1−β₁)ḡ, v ← β₂v + (1−β₂)ḡ²).
    W ← (1 − ηλ)·W − η·u   (decoupled decay, as optax.adamw)

The loo form is the newer collector's (the squared leave-one-out mean); an
older file (code/optimizers_loo.py) used the leave-one-out mean of g_j².
"Dense" is `default_muon_routing` (rank ≥ 2, not an embedding or head), as the
authors' hybrid trainer keeps embeddings on plain AdamW.

Where the gradients come from (the decision): the GPT-2 trainer already runs
its K microbatches one after another in a `lax.scan`; for these modes it keeps
each microbatch's gradient (K gradients in memory, no extra forward/backward
pass) and passes them. The relu2 trainer takes one full-batch gradient per
seed, so every mode but std is refused there with one line (`check_microbatches`):
splitting relu2's batch would change its task, not just its optimizer.
``updates`` (the mean gradient, after any clip of the chain) is read by std
only; the other modes read the unclipped microbatch gradients, as the
authors' optimizer reads its buffers and not the clipped p.grad.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import domains
from optimizers.muon import default_muon_routing
from optimizers.zoo_common import ROUTING_DOMAIN, find_states, state_dtype, unzip

CROSSFIT_MODES = ("std", "cf", "inv", "full", "loo")

IMPLICIT_BIAS_NOTE = (
  "None known: the source gives none. Each mode changes how AdamW's u = m̂/√v̂ is estimated, not "
  "its form, so AdamW's ℓ∞ picture (‖θ‖_∞ ≤ 1/λ when the update is sign-like) is at best a "
  "heuristic here, and the corrected inverse can shrink u below it."
)


def needs_microbatches(mode: str) -> bool:
  """Whether ``mode`` reads per-microbatch gradients (all but std)."""
  return mode != "std"


def check_microbatches(mode: str, num_microbatches: int | None) -> None:
  """A ValueError (one line) if a trainer giving ``num_microbatches`` per-step
  gradients (None: it cannot give any) cannot feed ``mode``."""
  if mode not in CROSSFIT_MODES:
    raise ValueError(f"Unknown crossfit_adamw mode {mode!r}; known: {CROSSFIT_MODES}.")
  if not needs_microbatches(mode):
    return
  if num_microbatches is None:
    raise ValueError(
      f"crossfit_adamw mode={mode!r} needs per-microbatch gradients, which this trainer "
      "(full-batch relu2, or Nexus) does not make: use mode='std' or a GPT-2 run with "
      "grad_accum_steps >= 2."
    )
  even = mode in ("cf", "full")
  if num_microbatches < 2 or (even and num_microbatches % 2):
    need = "an even grad_accum_steps >= 2" if even else "grad_accum_steps >= 2"
    raise ValueError(
      f"crossfit_adamw mode={mode!r} with grad_accum_steps={num_microbatches}: it needs "
      f"{need} (its microbatches are split into the moments' groups)."
    )


class ScaleByCrossfitAdamState(NamedTuple):
  """Its presence tells a trainer to pass ``microbatch_grads`` (std mode keeps
  optax's ScaleByAdamState instead)."""

  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # m, like the params (float32 unless mu_dtype).
  nu: optax.Updates  # v, like the params, float32.


# Each leaf's K microbatch gradients are a Python list of K arrays and every
# statistic over them is an unrolled sum: XLA:CPU fuses the K − 1 elementwise adds
# with their producers, where a reduction over a leading K axis is a separate pass
# ~100× slower (27 ms against 0.25 ms for K = 4 on 1M floats).


def _mean(x_K):
  """The mean of a list of K arrays."""
  return sum(x_K[1:], x_K[0]) / len(x_K)


def _sample_var(x_K):
  """The sample variance (/(K − 1)) of a list of K ≥ 2 arrays."""
  mean = _mean(x_K)
  return sum(jnp.square(x - mean) for x in x_K) / (len(x_K) - 1)


def _var_of_mean(p_K):
  """Sample variance of the K values, divided by K (0 for K = 1: one
  microbatch, no correction)."""
  if len(p_K) < 2:
    return jnp.zeros_like(p_K[0])
  return _sample_var(p_K) / len(p_K)


def _adam_leaf(g_K, g_bar, m, v, t, b1, b2, eps, mode):
  """std / cf / inv / full on one leaf (g_K a list of K arrays): (u, m, v)."""
  bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
  half = len(g_K) // 2
  cross = mode in ("cf", "full")
  g_m = _mean(g_K[:half]) if cross else g_bar
  s = _mean([jnp.square(g) for g in g_K[half:]]) if cross else jnp.square(g_bar)
  var = None
  if mode in ("inv", "full"):
    g_var = g_K[half:] if cross else g_K
    p_K = [jnp.sqrt(jnp.maximum((b2 * v + (1.0 - b2) * jnp.square(g)) / bc2, 0.0)) for g in g_var]
    var = jnp.maximum(_var_of_mean(p_K), 0.0)
  m = b1 * m + (1.0 - b1) * g_m
  v = b2 * v + (1.0 - b2) * s
  d = jnp.sqrt(v / bc2) + eps
  inv = 1.0 / d
  if var is not None:
    inv = jnp.maximum(inv - var / d**3, 0.0)
  return (m / bc1) * inv, m, v


def _loo_leaf(g_K, g_bar, m, v, t, b1, b2, eps, jensen):
  """The leave-one-out update on one leaf (g_K a list of K arrays): (u, m, v)."""
  k = len(g_K)
  bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
  g_loo_K = [(k * g_bar - g) / (k - 1) for g in g_K]
  d_K = [
    jnp.sqrt(jnp.maximum((b2 * v + (1.0 - b2) * jnp.square(g)) / bc2, 0.0)) + eps for g in g_loo_K
  ]
  m_hat_K = [(b1 * m + (1.0 - b1) * g) / bc1 for g in g_K]
  u_first = _mean([mh / d for mh, d in zip(m_hat_K, d_K)])
  u = u_first
  if jensen:
    u = u_first - _sample_var(d_K) * _mean([mh / d**3 for mh, d in zip(m_hat_K, d_K)])
    u = jnp.where(u * u_first >= 0, u, 0.0)
  return u, b1 * m + (1.0 - b1) * g_bar, b2 * v + (1.0 - b2) * jnp.square(g_bar)


def scale_by_crossfit_adam(
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  mode: str = "full",
  jensen: bool = True,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], bool] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The direction u of the module docstring for ``mode``; learning rate and decay after it.

  ``update(updates, state, params=None, *, microbatch_grads=None)``:
  ``microbatch_grads`` is the params' tree with a leading K axis on every leaf
  (needed by every mode but std, which is optax.scale_by_adam).

  Args:
    b1, b2, eps: Adam's β₁, β₂ and ε (added to √v̂, as optax).
    mode: "std", "cf", "inv", "full" or "loo".
    jensen: loo only: subtract the Var(d_r)·u₃ term.
    mu_dtype: dtype of m (default float32).
    routing: loo only: ``routing(path, leaf) -> bool`` for the dense leaves that
      take the leave-one-out update (None: `default_muon_routing`).
  """
  if mode not in CROSSFIT_MODES:
    raise ValueError(f"Unknown crossfit_adamw mode {mode!r}; known: {CROSSFIT_MODES}.")
  if mode == "std":
    return optax.with_extra_args_support(optax.scale_by_adam(b1, b2, eps, mu_dtype=mu_dtype))
  dtype = state_dtype(mu_dtype)
  dense = default_muon_routing if routing is None else routing

  def init_fn(params):
    return ScaleByCrossfitAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params),
      nu=jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
    )

  def update_fn(updates, state, params=None, *, microbatch_grads=None, **extra_args):
    del params, extra_args
    if microbatch_grads is None:
      raise ValueError(
        f"crossfit_adamw mode={mode!r} needs update(..., microbatch_grads=...): the "
        "per-microbatch gradients with a leading microbatch axis."
      )
    k = jax.tree.leaves(microbatch_grads)[0].shape[0]
    if k < 2:  # A leave-one-out or a split needs two microbatches (shapes are static).
      raise ValueError(f"crossfit_adamw mode={mode!r} got {k} microbatch(es); it needs >= 2.")
    t = optax.safe_increment(state.count).astype(jnp.float32)

    def leaf(path, u, g_K, m, v):
      g_K = [g_K[j].astype(jnp.float32) for j in range(k)]
      g_bar, m32 = _mean(g_K), m.astype(jnp.float32)
      if mode != "loo":
        out = _adam_leaf(g_K, g_bar, m32, v, t, b1, b2, eps, mode)
      elif dense(path, u):
        out = _loo_leaf(g_K, g_bar, m32, v, t, b1, b2, eps, jensen)
      else:
        out = _adam_leaf(g_K, g_bar, m32, v, t, b1, b2, eps, "std")
      direction, m_new, v_new = out
      return direction.astype(u.dtype), m_new.astype(dtype), v_new

    out = jax.tree_util.tree_map_with_path(leaf, updates, microbatch_grads, state.mu, state.nu)
    direction, mu, nu = unzip(updates, out, 3)
    return direction, ScaleByCrossfitAdamState(optax.safe_increment(state.count), mu, nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def crossfit_adamw(
  learning_rate: optax.ScalarOrSchedule,
  mode: str = "full",
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  jensen: bool = True,
  weight_decay: float = 0.0,
  mask=None,
  mu_dtype: Any | None = None,
  routing: Callable[[Any, Any], bool] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """AdamW whose moments follow ``mode`` (module docstring): W ← (1 − ηλ)W − η·u.

  ``mode="std"`` is optax.adamw (same chain). The other modes' ``update`` takes
  ``microbatch_grads=`` (the params' tree, a leading microbatch axis per leaf).
  Under `optax.inject_hyperparams` list ``mode`` and ``routing`` in ``static_args``.
  """
  return optax.chain(
    scale_by_crossfit_adam(b1, b2, eps, mode, jensen, mu_dtype, routing),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )


def wants_microbatch_grads(opt_state) -> bool:
  """Whether an optimizer state (under any wrapper) holds a mode that reads
  ``microbatch_grads``: the trainer's test, made at trace time."""
  return bool(find_states(opt_state, ScaleByCrossfitAdamState))


DOMAINS: dict[str, domains.Domain] = {
  "mode": domains.one_of(CROSSFIT_MODES),
  "b1": domains.DECAY,
  "b2": domains.DECAY,
  "eps": domains.positive(),
  "jensen": domains.boolean(),
  "mu_dtype": domains.DTYPE,
  "routing": ROUTING_DOMAIN,
}
