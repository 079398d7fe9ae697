"""Curve fitting: it finds a lower path around a barrier, and projected curves
stay inside the optimizer's ball at every t."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from analysis import constraints, curves, paths

LAM = 0.5  # Radius 1/λ = 2.


def ring_loss(params, batch):
  """(‖w‖² − 1)²: a ring of minima; the segment from (−1, 0) to (1, 0) crosses
  the bump at the origin (loss 1), an arc around it has loss 0."""
  del batch
  return (jnp.sum(params["w"] ** 2) - 1.0) ** 2


def _mean_loss(loss_fn, kind, a, b, bends, batch=None, n=201):
  ts = jnp.linspace(0, 1, n)
  return float(
    jnp.mean(jax.vmap(lambda t: loss_fn(paths.path_point(kind, a, b, t, bends), batch))(ts))
  )


@pytest.mark.parametrize("kind", ["polychain", "bezier"])
def test_fitted_curve_goes_around_the_bump(kind):
  # Both endpoints on the ring, slightly above the x axis: on the axis itself
  # the gradient across the line would vanish by symmetry.
  delta = 0.1
  a = {"w": jnp.asarray([-np.cos(delta), np.sin(delta)])}
  b = {"w": jnp.asarray([np.cos(delta), np.sin(delta)])}
  linear = _mean_loss(ring_loss, "linear", a, b, None)
  fit = curves.fit_curve(
    ring_loss,
    a,
    b,
    None,
    jax.random.PRNGKey(0),
    kind=kind,
    num_bends=3,
    optimizer=optax.adam(0.02),
    num_steps=600,
    points_per_step=4,
  )
  fitted = _mean_loss(ring_loss, kind, a, b, fit.bends)
  assert linear > 0.45
  assert fitted < 0.1 * linear, (linear, fitted)
  assert fit.loss_history.shape == (600,)


def target_loss(params, batch):
  """Pulls every leaf towards a target far outside the ball."""
  return sum(jnp.sum((x - t) ** 2) for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(batch)))


def _matrix_setup():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  target = {"m": 6.0 * jax.random.normal(k1, (4, 3)), "v": 6.0 * jax.random.normal(k2, (5,))}
  a = constraints.project_onto_ball(jax.tree.map(lambda x: 0.3 * x, target), "l1", LAM)
  b = constraints.project_onto_ball(
    jax.tree.map(lambda x: 0.3 * x + jax.random.normal(k3, x.shape), target), "l1", LAM
  )
  return a, b, target


@pytest.mark.parametrize("kind", ["polychain", "bezier"])
@pytest.mark.parametrize("k,projection", [("l1", "linf"), ("nuclear", "spectral")])
def test_projected_curves_stay_inside_the_ball(kind, k, projection):
  a, b, target = _matrix_setup()
  # Endpoints inside the ball of this K (ℓ∞ ball ⊄ spectral ball: project again).
  a, b = (constraints.project_onto_ball(x, k, LAM) for x in (a, b))
  kwargs = dict(kind=kind, num_bends=2, optimizer=optax.adam(0.1), num_steps=150)
  free = curves.fit_curve(target_loss, a, b, target, jax.random.PRNGKey(2), **kwargs)
  held = curves.fit_curve(
    target_loss,
    a,
    b,
    target,
    jax.random.PRNGKey(2),
    project=curves.ball_projection(k, LAM),
    **kwargs,
  )
  ts = jnp.linspace(0, 1, 101)
  worst = lambda bends: max(
    float(
      constraints.max_constraint(
        constraints.constraint_values(paths.path_point(kind, a, b, float(t), bends), k, LAM)
      )
    )
    for t in np.asarray(ts)
  )
  assert worst(free.bends) > 1.2  # Unconstrained, the curve leaves the ball...
  assert worst(held.bends) <= 1 + 1e-5  # ...projected, no point of it does.
  # And the projected bends press against the edge (the constraint is active).
  bend_values = jax.vmap(
    lambda p: constraints.max_constraint(constraints.constraint_values(p, k, LAM))
  )(held.bends)
  np.testing.assert_allclose(bend_values, 1.0, atol=1e-4)


def test_minibatches_and_vmapped_pairs():
  x = jax.random.normal(jax.random.PRNGKey(3), (32, 2))
  batch = (x, jnp.sum(x, 1))
  loss = lambda p, data: jnp.mean((data[0] @ p["w"] - data[1]) ** 2)
  a_P = {"w": jnp.zeros((3, 2))}
  b_P = {"w": jnp.ones((3, 2)) * jnp.arange(3.0)[:, None]}
  fits = curves.fit_curves(
    loss,
    a_P,
    b_P,
    batch,
    jax.random.split(jax.random.PRNGKey(4), 3),
    kind="bezier",
    num_steps=20,
    minibatch_size=8,
  )
  assert fits.bends["w"].shape == (3, 1, 2) and fits.loss_history.shape == (3, 20)
  with pytest.raises(ValueError, match="minibatch_size"):
    curves.fit_curve(
      loss, {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, batch, jax.random.PRNGKey(0), minibatch_size=64
    )
  with pytest.raises(ValueError, match="Unknown curve kind"):
    curves.fit_curve(
      loss, {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, batch, jax.random.PRNGKey(0), kind="linear"
    )
