"""Lion-K: Lion with any convex K, the root of the optimizer family.

Chen, Liu, Liang, Liu, "Lion Secretly Solves Constrained Optimization, As
Lyapunov Predicts" (arXiv:2310.05898, 2023); Lion itself is K = ℓ1 (Chen et al.,
"Symbolic Discovery of Optimization Algorithms", arXiv:2302.06675, 2023).

    u_t = ∇K(b1·m_{t−1} + (1 − b1)·g_t)
    m_t = b2·m_{t−1} + (1 − b2)·g_t
    θ_t = θ_{t−1} − η_t·(u_t + λ·θ_{t−1})

With λ > 0 the iterates end in {θ : λ·K*(θ) ≤ 1} (see optimizers.k_functions).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree as otu

from optimizers import domains
from optimizers.k_functions import get_k
from optimizers.orthogonalization import ORTHOGONALIZE_METHODS


def _flat(k_options):
  # optax.inject_hyperparams binds the signature and passes the **k_options
  # dict back as a keyword named "k_options"; unwrap it.
  return {**k_options.pop("k_options", {}), **k_options}


class ScaleByLionKState(NamedTuple):
  count: jax.Array  # shape (), int32: steps taken.
  mu: optax.Updates  # m_t, the b2 moving average of the gradients.


def scale_by_lion_k(
  k="l1",
  b1: float = 0.9,
  b2: float = 0.99,
  mu_dtype: Any | None = None,
  tree_map: Callable | None = None,
  **k_options,
) -> optax.GradientTransformation:
  """The Lion-K direction u = ∇K(b1·m + (1 − b1)·g), then m ← b2·m + (1 − b2)·g.

  Args:
    k: a name from `optimizers.K_FUNCTIONS` ("l1", "l2", "nuclear", "spectral",
      "rownorm", "huber", "schatten", ...) or a `KFunction`.
    b1: weight of the momentum in the direction.
    b2: decay of the momentum.
    mu_dtype: dtype of the momentum (default: that of the parameters).
    tree_map: how ∇K is mapped over the leaves, ``tree_map(fn, tree)`` (default
      ``jax.tree.map``); Muon passes `optimizers.owner_layout.tree_map` under sharding.
    **k_options: options of K, e.g. ``method="svd"`` or ``ns_steps=5`` for
      "nuclear", ``p=3`` for "schatten", ``e=1e-3`` for "huber".
  """
  kfn = get_k(k, **_flat(k_options))
  mu_dtype = jnp.dtype(mu_dtype) if mu_dtype is not None else None

  def init_fn(params):
    return ScaleByLionKState(
      count=jnp.zeros([], jnp.int32), mu=otu.zeros_like(params, dtype=mu_dtype)
    )

  def update_fn(updates, state, params=None):
    del params
    inputs = jax.tree.map(lambda g, m: (1.0 - b1) * g + b1 * m, updates, state.mu)
    direction = (tree_map or jax.tree.map)(kfn.grad, inputs)
    direction = jax.tree.map(lambda d, g: d.astype(g.dtype), direction, updates)
    mu = otu.cast(otu.update_moment(updates, state.mu, b2, 1), mu_dtype)
    return direction, ScaleByLionKState(optax.safe_increment(state.count), mu)

  return optax.GradientTransformation(init_fn, update_fn)


def lion_k(
  learning_rate: optax.ScalarOrSchedule,
  k="l1",
  b1: float = 0.9,
  b2: float = 0.99,
  weight_decay: float = 0.0,
  mask=None,
  mu_dtype: Any | None = None,
  **k_options,
) -> optax.GradientTransformation:
  """Lion-K with decoupled weight decay: θ ← θ − η·(∇K(b1·m + (1−b1)·g) + λ·θ).

  The weight decay is multiplied by the learning rate, as in `optax.lion`, so
  the constraint radius is 1/λ whatever the schedule. ``mask`` (a pytree of
  bools or a function of the params) selects the leaves that decay.
  """
  return optax.chain(
    scale_by_lion_k(k, b1=b1, b2=b2, mu_dtype=mu_dtype, **_flat(k_options)),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )


def lion(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.99,
  weight_decay: float = 0.0,
  mask=None,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  """Lion (Chen et al. 2023) = Lion-K with K = ℓ1: θ ← θ − η·(sign(b1·m + (1−b1)·g) + λθ).

  Same update as `optax.lion` (whose default weight decay is 1e-3; here 0).
  """
  return lion_k(
    learning_rate, k="l1", b1=b1, b2=b2, weight_decay=weight_decay, mask=mask, mu_dtype=mu_dtype
  )


# The values a config may give each hyperparameter (optimizers.domains); the
# K options are those of the registered K functions, which check the rest
# (an unknown K or option) when the optimizer is built.
LION_DOMAINS = {"b1": domains.DECAY, "b2": domains.DECAY, "mu_dtype": domains.DTYPE}
K_OPTION_DOMAINS = {
  "method": domains.one_of(ORTHOGONALIZE_METHODS),
  "ns_steps": domains.integer(1),
  "ns_coeffs": domains.Domain(
    lambda v: isinstance(v, (str, tuple, list)), "a preset name or (a, b, c) triples"
  ),
  "compute_dtype": domains.DTYPE,
  "gram": domains.optional(domains.boolean()),
  "eps": domains.positive(),
  "e": domains.positive(),
  "p": domains.positive(),
  "axis": domains.Domain(lambda v: isinstance(v, int) and not isinstance(v, bool), "an int axis"),
}
LION_K_DOMAINS = {
  "k": domains.Domain(lambda v: isinstance(v, str), "the name of a K (optimizers.K_FUNCTIONS)"),
  **LION_DOMAINS,
  **K_OPTION_DOMAINS,
}
