"""Fitting a low-loss curve between two solutions (Garipov et al. 2018).

With the endpoints a, b fixed, learn the bends P of a path φ_P (polychain or
Bézier, `analysis.paths`) to minimize the loss averaged along the curve,

    ℓ(P) = E_{t ~ U[0, 1]} L(φ_P(t)),

by stochastic gradient: each step samples t (``points_per_step`` of them) and,
optionally, a minibatch, and takes one optax step on ∇_P L(φ_P(t)). The bends
start on the segment (`initial_bends`), where every path kind is the straight
line. Garipov, Izmailov, Podoprikhin, Vetrov, Wilson, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.

Constrained curves: ``project`` maps each bend back into a convex set after
every update (e.g. `ball_projection`: the ball {λ·K*(θ) ≤ 1} of an optimizer,
ℓ∞ for Lion/AdamW, spectral for Muon). If the endpoints are inside too, the
whole curve is: a polychain's segments join points of a convex set, and a
Bézier curve lies in the convex hull of its control points (its Bernstein
weights are nonnegative and sum to 1).

The whole fit is one jitted `lax.scan` over steps, a pure function of
(a, b, batch, key), so `fit_curves` vmaps it over pairs.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from analysis.constraints import PROJECTABLE_KS, project_onto_ball
from analysis.paths import check_same_structure, initial_bends, path_point
from optimizers import implicit_constraints

CURVE_KINDS = ("polychain", "bezier")


class CurveFit(NamedTuple):
  """The fitted bends (leaves (k, ...)) and the sampled loss at every step."""

  bends: Any
  loss_history: jax.Array


def ball_projection(ks, weight_decay) -> Callable[[Any], Any]:
  """params -> params projected onto {λ·K*(θ) ≤ 1} (`project_onto_ball`)."""
  return lambda params: project_onto_ball(params, ks, weight_decay)


def optimizer_ball_projection(opt_config, params) -> Callable[[Any], Any] | None:
  """The projection onto the ball of a train.py optimizer config section (its
  declared implicit constraints, `optimizers.implicit_constraints`), or None
  if a decayed leaf's K has no projection."""
  cons = jax.tree.leaves(
    implicit_constraints(dict(opt_config), params), is_leaf=lambda c: hasattr(c, "bound")
  )
  if any(c.weight_decay and c.k not in PROJECTABLE_KS for c in cons):
    return None
  treedef = jax.tree.structure(params)
  # An undecayed leaf has λ = 0, which projects nothing: any projectable K will do.
  ks = jax.tree.unflatten(treedef, [c.k if c.k in PROJECTABLE_KS else "l1" for c in cons])
  lams = jax.tree.unflatten(treedef, [float(c.weight_decay) / float(c.bound) for c in cons])
  return ball_projection(ks, lams)


def fit_curve(
  loss_fn: Callable[[Any, Any], jax.Array],
  a,
  b,
  batch,
  key,
  kind: str = "bezier",
  num_bends: int = 1,
  optimizer: optax.GradientTransformation | None = None,
  num_steps: int = 500,
  points_per_step: int = 1,
  minibatch_size: int | None = None,
  project: Callable[[Any], Any] | None = None,
) -> CurveFit:
  """Learns ``num_bends`` bends of a ``kind`` curve from a to b (module docstring).

  Args:
    loss_fn: ``(params, batch) -> scalar``.
    a, b: the endpoints (pytrees of the same structure), kept fixed.
    batch: the training data, a pytree with a leading example axis.
    key: PRNG key for t and the minibatches.
    kind: "polychain" or "bezier".
    num_bends: k ≥ 1.
    optimizer: optax transformation for the bends (default Adam, 1e-2).
    num_steps: optimizer steps.
    points_per_step: t samples averaged per step.
    minibatch_size: examples per step (None: the whole batch).
    project: applied to each bend after every update (e.g. `ball_projection`).
  """
  if kind not in CURVE_KINDS:
    raise ValueError(f"Unknown curve kind {kind!r}; known: {CURVE_KINDS}.")
  if num_bends < 1 or num_steps < 1 or points_per_step < 1:
    raise ValueError(
      f"num_bends, num_steps, points_per_step must be >= 1; got "
      f"{num_bends}, {num_steps}, {points_per_step}."
    )
  check_same_structure(a, b)
  num_examples = {jnp.shape(x)[0] for x in jax.tree.leaves(batch)}
  if minibatch_size is not None and not 1 <= minibatch_size <= min(num_examples):
    raise ValueError(f"minibatch_size must be in [1, {min(num_examples)}], got {minibatch_size}.")
  optimizer = optax.adam(1e-2) if optimizer is None else optimizer
  return _fit(
    loss_fn,
    kind,
    num_bends,
    optimizer,
    num_steps,
    points_per_step,
    minibatch_size,
    project,
    a,
    b,
    batch,
    key,
  )


def fit_curves(loss_fn, a_P, b_P, batch, keys_P, **kwargs) -> CurveFit:
  """`fit_curve` for P pairs at once (vmapped): bends (P, k, ...), history (P, steps)."""
  return jax.vmap(lambda a, b, key: fit_curve(loss_fn, a, b, batch, key, **kwargs))(
    a_P, b_P, keys_P
  )


@functools.partial(jax.jit, static_argnums=tuple(range(8)))
def _fit(
  loss_fn,
  kind,
  num_bends,
  optimizer,
  num_steps,
  points_per_step,
  minibatch_size,
  project,
  a,
  b,
  batch,
  key,
):
  # Bends are projected one by one: a leading bend axis is not a batch axis of
  # every projection (a bias (k, m) would be read as one k×m matrix).
  project_bends = (lambda bends: bends) if project is None else jax.vmap(project)

  def curve_loss(bends, t_key, data):
    ts = jax.random.uniform(t_key, (points_per_step,))
    losses = jax.vmap(lambda t: loss_fn(path_point(kind, a, b, t, bends), data))(ts)
    return jnp.mean(losses)

  def step(carry, step_key):
    bends, opt_state = carry
    t_key, data_key = jax.random.split(step_key)
    data = batch if minibatch_size is None else _minibatch(batch, data_key, minibatch_size)
    loss, grads = jax.value_and_grad(curve_loss)(bends, t_key, data)
    updates, opt_state = optimizer.update(grads, opt_state, bends)
    bends = project_bends(optax.apply_updates(bends, updates))
    return (bends, opt_state), loss

  bends = project_bends(initial_bends(a, b, num_bends))
  (bends, _), history = jax.lax.scan(
    step, (bends, optimizer.init(bends)), jax.random.split(key, num_steps)
  )
  return CurveFit(bends, history)


def _minibatch(batch, key, size):
  n = jax.tree.leaves(batch)[0].shape[0]
  idx = jax.random.permutation(key, n)[:size]
  return jax.tree.map(lambda x: x[idx], batch)
