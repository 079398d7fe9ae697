"""How close the data sources' minima sit, seen from one parameter point θ.

The Nexus claim (optimizers/nexus.py): at equal pretraining loss, an optimizer
can sit where the sources' (language, code, math) gradients agree and their
minima lie close together. Two measurements, pure functions of a parameter
pytree, a ``loss_fn(params, batch) -> scalar`` and one batch per source, with
the source batches stacked on a leading axis K (every leaf (K, ...)):

- `gradient_similarity` (training/similarity.py): the K×K matrix of cosine similarities between the
  sources' gradients at θ (all sources' gradients in one vmapped call).
- `source_minima`: fine-tune a copy of θ on each source alone for T steps
  (vmapped over sources, one jitted scan) and report ‖θ_s − θ‖, the pairwise
  ‖θ_s − θ_s'‖, the pairwise loss barrier between the source minima on the
  mixture loss (Frankle et al.'s definition, analysis.barriers), each source's
  loss drop L_s(θ) − L_s(θ_s), and the first-order proxy
  L_s(θ) − L_s(θ − γ∇L_mix(θ)): how much a step on the mixture lowers source s.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis.barriers import loss_barriers
from analysis.evaluate import all_pairs, evaluate_paths, gather_pairs

# The cosines are logged by the trainer too, so they live in training/.
from training.similarity import cosine_matrix, gradient_similarity, num_sources, source_gradients  # noqa: F401


def finetune_per_source(
  loss_fn, params, source_batches, optimizer: optax.GradientTransformation, steps: int
):
  """θ_s after ``steps`` steps of ``optimizer`` on source s alone, from θ, for
  every s at once: the params' pytree with a leading axis K."""
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}.")
  return _finetune_fn(loss_fn, optimizer, steps)(params, source_batches)


# The jitted functions are cached per (loss_fn, optimizer, steps) object, so
# measuring many checkpoints of one model with the same loss_fn compiles once.
@functools.cache
def _finetune_fn(loss_fn, optimizer, steps):
  def one_source(params, batch):
    def body(carry, _):
      p, state = carry
      updates, state = optimizer.update(jax.grad(loss_fn)(p, batch), state, p)
      return (optax.apply_updates(p, updates), state), None

    (p, _), _ = jax.lax.scan(body, (params, optimizer.init(params)), None, length=steps)
    return p

  return jax.jit(jax.vmap(one_source, in_axes=(None, 0)))


@functools.cache
def _loss_fns(loss_fn):
  """(per_source, own_loss, mixture, stepped_per_source) for one loss_fn."""
  per_source = jax.vmap(loss_fn, in_axes=(None, 0))
  mixture = lambda p, batches: jnp.mean(per_source(p, batches))

  def stepped_per_source(params, batches, step):  # L_s(θ − γ∇L_mix(θ)) for every s
    g_mix = jax.grad(mixture)(params, batches)
    return per_source(jax.tree.map(lambda p, g: p - step * g, params, g_mix), batches)

  # own_loss: L_s(θ_s), params and batch both indexed by s.
  return jax.jit(per_source), jax.jit(jax.vmap(loss_fn)), mixture, jax.jit(stepped_per_source)


def _tree_distance(a, b) -> jax.Array:
  return optax.tree.norm(optax.tree.sub(a, b))


_distances_to = jax.jit(jax.vmap(_tree_distance, in_axes=(0, None)))
_pair_distances = jax.jit(jax.vmap(_tree_distance))


def source_minima(
  loss_fn,
  params,
  source_batches,
  optimizer: optax.GradientTransformation,
  steps: int,
  proxy_step: float = 1e-2,
  points: int = 17,
) -> dict:
  """The closeness of the sources' minima around ``params`` (module docstring).

  The mixture loss is the mean over sources. Returns numpy arrays:
  distance_to_start (K,), pairwise_distance (K, K), pairwise_barrier (K, K)
  (Frankle's mean barrier of the mixture loss on the segment θ_s → θ_s'),
  loss_start / loss_end / loss_drop (K,), first_order_proxy (K,).
  """
  k = num_sources(source_batches)
  per_source, own_loss, mixture, stepped_per_source = _loss_fns(loss_fn)
  theta_K = finetune_per_source(loss_fn, params, source_batches, optimizer, steps)
  loss_start = np.asarray(per_source(params, source_batches))
  loss_end = np.asarray(own_loss(theta_K, source_batches))
  proxy = loss_start - np.asarray(stepped_per_source(params, source_batches, proxy_step))

  distance_to_start = np.asarray(_distances_to(theta_K, params))
  pairwise_distance = np.zeros((k, k))
  pairwise_barrier = np.zeros((k, k))
  pairs = all_pairs(k)
  if len(pairs):
    a_P, b_P = gather_pairs(theta_K, pairs)
    ts = jnp.linspace(0.0, 1.0, points)
    losses_PxT = evaluate_paths(mixture, "linear", a_P, b_P, ts, source_batches)
    barrier_P = np.asarray(loss_barriers(losses_PxT, ts)["mean"].height)
    dist_P = np.asarray(_pair_distances(a_P, b_P))
    for (i, j), dist, barrier in zip(pairs, dist_P, barrier_P):
      pairwise_distance[i, j] = pairwise_distance[j, i] = dist
      pairwise_barrier[i, j] = pairwise_barrier[j, i] = barrier
  return {
    "distance_to_start": distance_to_start,
    "pairwise_distance": pairwise_distance,
    "pairwise_barrier": pairwise_barrier,
    "loss_start": loss_start,
    "loss_end": loss_end,
    "loss_drop": loss_start - loss_end,
    "first_order_proxy": proxy,
  }
