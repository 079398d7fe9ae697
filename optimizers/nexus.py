"""Nexus: an outer optimizer driven by an inner loop over data sources.

"Nexus: same pretraining loss, better downstream generalization via common
minima". From θ, an inner loop of k steps on a copy θ̃₀ = θ visits sources
s_1 … s_k and steps along each one's normalized gradient,

    θ̃_m = θ̃_{m−1} − γ·d_{s_m}(θ̃_{m−1}),   d_s = ∇L_s/‖∇L_s‖,

and the outer optimizer (AdamW, Muon, Lion-K, ...) receives the
pseudo-gradient G = (θ − θ̃_k)/(γ·k), and its update is applied to θ.

Why it aligns the sources. Expanding d_{s_m}(θ̃_{m−1}) around θ,

    G = d̄ − (γ/k)·Σ_m Σ_{l<m} J_{s_m}·d_{s_l} + O(γ²),

with d̄ the mean normalized gradient at θ and J_s = ∂d_s/∂θ
= (I − d_s d_sᵀ)·H_s/‖g_s‖. Averaged over random source orders each ordered
pair (s, s') appears with probability ½ in each order, and, up to the
asymmetry of J_s, J_s d_{s'} + J_{s'} d_s = ∇⟨d_s, d_{s'}⟩: the correction is
−γ(k−1)/4·∇(mean pairwise cosine similarity of the sources' gradients). So
descending along G descends the loss and ascends the gradients' alignment,
pulling the sources' minima together. With ``normalize=None`` (raw gradients)
and SGD as the outer optimizer this is Fish (Shi et al., "Gradient Matching
for Domain Generalization", ICLR 2022) with ε = η/(γ·k); with k = 1 it is the
outer optimizer on one sampled source's normalized gradient.

Use (opaque mode, as `optax.contrib.sam`): the caller supplies
``grad_fn(params, source) -> gradient of source's loss on this step's batch``,
where ``source`` is a traced int32 (index a stacked per-source batch with it,
or use `jax.lax.switch`):

    opt = nexus(optax.adamw(1e-3), inner_learning_rate=0.01, inner_steps=3, num_sources=3)
    grad_fn = jax.grad(lambda p, s: loss(p, jax.tree.map(lambda b: b[s], batches)))
    updates, state = opt.update(None, state, params, grad_fn=grad_fn)

The inner loop is a `lax.scan` (one compiled gradient), inside jit. The
source-order RNG lives in the state, so a resumed run sees the same orders.

Controls (``control=``): a gain of Nexus over its outer optimizer could come
from the alignment term above or merely from the pseudo-gradient's different
magnitude (a larger or smaller effective step). A control arm feeds the outer
optimizer a pseudo-gradient with exactly Nexus's norm ‖G‖ at every step (it
runs Nexus's inner loop for that norm, so it costs about 2k gradients a step)
but no cross-source alignment pressure:

- "random_direction" (the experiment's control): G_c ∝ d̄ + ‖G − d̄‖·r/‖r‖,
  rescaled to ‖G‖, with d̄ the mean of the same k sources' normalized
  gradients at θ and r Gaussian. It keeps the first-order (descent) term and
  a perturbation of the size of Nexus's O(γ) correction, but points that
  correction in a random direction: only the alignment is removed. This
  isolates alignment best, so analysis.nexus_mixture uses it.
- "same_source": the k inner steps on one source (a random one each step),
  rescaled to ‖G‖: the issue's literal control. Its O(γ) term is within one
  source, −γ(k−1)/2·(I − d dᵀ)∇log‖g_s‖ (curvature, not alignment), but each
  step then uses 1/K of the batch it reads, a second difference from Nexus.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

NORMALIZATIONS = ("global", "per_tensor", None)
SOURCE_ORDERS = ("random", "cyclic")
CONTROLS = ("none", "same_source", "random_direction")


class NexusState(NamedTuple):
  count: jax.Array  # shape (), int32: outer steps taken.
  rng: jax.Array  # uint32[2]: the key the next step's source order is drawn from.
  outer_state: optax.OptState


def source_sequence(rng, inner_steps: int, num_sources: int, order: str = "random"):
  """The k sources of one inner loop, int32 (inner_steps,).

  "cyclic": 0, 1, 2, … (mod num_sources). "random": a random permutation when
  k equals the number of sources; for k < K the first k of one (k distinct
  sources); for k > K consecutive independent permutations, so every source
  is visited ⌊k/K⌋ or ⌈k/K⌉ times.
  """
  if order == "cyclic":
    return jnp.arange(inner_steps, dtype=jnp.int32) % num_sources
  if order != "random":
    raise ValueError(f"Unknown source_order {order!r}; known: {SOURCE_ORDERS}.")
  rounds = -(-inner_steps // num_sources)
  keys = jax.random.split(rng, rounds)
  perms = jax.vmap(lambda k: jax.random.permutation(k, num_sources))(keys)
  return perms.reshape(-1)[:inner_steps].astype(jnp.int32)


def normalize_gradient(grads, normalize: str | None = "global"):
  """d = g/‖g‖ over the whole pytree ("global"), per leaf ("per_tensor") or g (None).
  A zero gradient stays zero."""
  safe = lambda x, n: x / jnp.where(n > 0, n, 1).astype(x.dtype)
  if normalize == "global":
    return jax.tree.map(lambda g: safe(g, optax.tree.norm(grads)), grads)
  if normalize == "per_tensor":
    return jax.tree.map(lambda g: safe(g, jnp.linalg.norm(g.ravel())), grads)
  if normalize is None:
    return grads
  raise ValueError(f"Unknown normalize {normalize!r}; known: {NORMALIZATIONS}.")


def pseudo_gradient(params, grad_fn, sources, gamma: float, normalize):
  """G = (θ − θ̃_k)/(γ·k) after the inner loop over ``sources`` (module docstring)."""

  def inner_step(theta_tilde, source):
    d = normalize_gradient(grad_fn(theta_tilde, source), normalize)
    return jax.tree.map(lambda p, g: p - gamma * g.astype(p.dtype), theta_tilde, d), None

  theta_tilde, _ = jax.lax.scan(inner_step, params, sources)
  return jax.tree.map(lambda p, q: (p - q) / (gamma * sources.shape[0]), params, theta_tilde)


def mean_direction(params, grad_fn, sources, normalize):
  """d̄ = (1/k)·Σ_m d_{s_m}(θ): G's first-order term, every gradient at θ."""

  def add(total, source):
    d = normalize_gradient(grad_fn(params, source), normalize)
    return jax.tree.map(lambda t, g: t + g.astype(t.dtype), total, d), None

  total, _ = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, params), sources)
  return jax.tree.map(lambda t: t / sources.shape[0], total)


def _scaled_to(tree, norm):
  """tree·norm/‖tree‖ (zero stays zero)."""
  own = optax.tree.norm(tree)
  scale = norm / jnp.where(own > 0, own, 1)
  return jax.tree.map(lambda x: (x * scale).astype(x.dtype), tree)


def _gaussian_like(rng, tree):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(rng, len(leaves))
  noise = [jax.random.normal(k, x.shape, jnp.float32).astype(x.dtype) for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, noise)


def control_pseudo_gradient(
  control: str, params, grad_fn, sources, gamma: float, normalize, num_sources: int, rng, step
):
  """(the control's pseudo-gradient, Nexus's G): the control has ‖G‖ exactly
  (module docstring). same_source's one source: (sources[0] + step) mod K;
  ``rng`` draws random_direction's noise."""
  pseudo = pseudo_gradient(params, grad_fn, sources, gamma, normalize)
  if control == "same_source":
    # sources[0] is uniform for "random" order; + step cycles it for "cyclic".
    one = ((sources[0] + step) % num_sources).astype(sources.dtype)
    direction = pseudo_gradient(params, grad_fn, jnp.full_like(sources, one), gamma, normalize)
  elif control == "random_direction":
    mean = mean_direction(params, grad_fn, sources, normalize)
    correction = optax.tree.norm(jax.tree.map(jnp.subtract, pseudo, mean))
    noise = _scaled_to(_gaussian_like(rng, params), correction)
    direction = jax.tree.map(jnp.add, mean, noise)
  else:
    raise ValueError(f"Unknown nexus control {control!r}; known: {CONTROLS}.")
  return _scaled_to(direction, optax.tree.norm(pseudo)), pseudo


def nexus(
  outer: optax.GradientTransformation,
  inner_learning_rate: float,
  inner_steps: int,
  num_sources: int,
  normalize: str | None = "global",
  source_order: str = "random",
  seed: int = 0,
  control: str = "none",
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``outer`` with the Nexus inner loop (module docstring).

  Args:
    outer: any optax optimizer; it sees the pseudo-gradient (θ − θ̃)/(γ·k).
    inner_learning_rate: γ, the inner step along normalized gradients.
    inner_steps: k, inner steps per outer step.
    num_sources: K, the number of data sources ``grad_fn`` accepts.
    normalize: "global", "per_tensor" or None (raw gradients: Fish).
    source_order: "random" (permutations, from the RNG in the state) or
      "cyclic" (0, 1, 2, …, reproducible).
    seed: seed of the source-order RNG.
    control: "none" (Nexus), or a control arm with Nexus's pseudo-gradient
      norm and no alignment pressure: "random_direction" or "same_source"
      (module docstring).
  """
  if inner_steps < 1 or num_sources < 1:
    raise ValueError(
      f"nexus needs inner_steps >= 1 and num_sources >= 1, got {inner_steps} and {num_sources}."
    )
  if not inner_learning_rate > 0:
    raise ValueError(f"nexus needs inner_learning_rate > 0, got {inner_learning_rate}.")
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"Unknown normalize {normalize!r}; known: {NORMALIZATIONS}.")
  if source_order not in SOURCE_ORDERS:
    raise ValueError(f"Unknown source_order {source_order!r}; known: {SOURCE_ORDERS}.")
  if control not in CONTROLS:
    raise ValueError(f"Unknown nexus control {control!r}; known: {CONTROLS}.")
  gamma = inner_learning_rate

  def init_fn(params):
    return NexusState(
      count=jnp.zeros([], jnp.int32), rng=jax.random.PRNGKey(seed), outer_state=outer.init(params)
    )

  def update_fn(
    updates,
    state,
    params=None,
    *,
    grad_fn: Callable[[Any, jax.Array], Any] | None = None,
    **extra_args,
  ):
    del updates  # The pseudo-gradient replaces it.
    if grad_fn is None or params is None:
      raise ValueError(
        "nexus.update needs params and grad_fn=grad_fn(params, source); "
        "see optimizers.nexus's docstring."
      )
    rng, order_rng = jax.random.split(state.rng)
    sources = source_sequence(order_rng, inner_steps, num_sources, source_order)
    if control == "none":
      pseudo = pseudo_gradient(params, grad_fn, sources, gamma, normalize)
    else:  # The noise key from the order key: Nexus's own RNG stream stays as it was.
      noise_rng = jax.random.fold_in(order_rng, 1)
      pseudo, _ = control_pseudo_gradient(
        control, params, grad_fn, sources, gamma, normalize, num_sources, noise_rng, state.count
      )
    new_updates, outer_state = optax.with_extra_args_support(outer).update(
      pseudo, state.outer_state, params, **extra_args
    )
    return new_updates, NexusState(optax.safe_increment(state.count), rng, outer_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
