"""Barriers of hand-built 1-D landscapes with known maxima, both definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from analysis import barriers, evaluate


def double_well(params, batch):
  """L(θ) = (θ² − 1)² + c·(θ + 1): minima near ±1, L(−1) = 0, L(1) = 2c. c is a
  parameter equal at both endpoints, so it stays constant along the path."""
  del batch
  theta = params["theta"]
  return (theta**2 - 1) ** 2 + params["c"] * (theta + 1)


def _endpoints(cs):
  cs = jnp.asarray(cs, jnp.float32)
  return ({"theta": -jnp.ones_like(cs), "c": cs}, {"theta": jnp.ones_like(cs), "c": cs})


def test_symmetric_double_well_has_barrier_one_at_the_middle():
  a_P, b_P = _endpoints([0.0])
  ts = jnp.linspace(0, 1, 65)
  losses = evaluate.evaluate_paths(double_well, "linear", a_P, b_P, ts, None)
  for kind, result in barriers.loss_barriers(losses, ts).items():
    np.testing.assert_allclose(result.height, [1.0], atol=1e-6, err_msg=kind)
    np.testing.assert_allclose(result.t_max, [0.5], err_msg=kind)


def test_tilted_double_well_matches_the_closed_form_maxima():
  # θ_t = 2t − 1, so L(θ_t) = 16t²(1 − t)² + 2c·t, L(a) = 0, L(b) = 2c.
  c = 0.3
  a_P, b_P = _endpoints([c])
  ts = jnp.linspace(0, 1, 4097)
  losses = evaluate.evaluate_paths(double_well, "linear", a_P, b_P, ts, None)
  curve = lambda t: 16 * t**2 * (1 - t) ** 2 + 2 * c * t
  # Frankle: max L − ½(0 + 2c); the max of the curve sits right of ½.
  best = minimize_scalar(
    lambda t: -curve(t), bounds=(0.4, 0.7), method="bounded", options={"xatol": 1e-10}
  )
  mean = barriers.loss_barrier(losses, ts, "mean")
  np.testing.assert_allclose(mean.height, [curve(best.x) - c], atol=1e-5)
  np.testing.assert_allclose(mean.t_max, [best.x], atol=1e-3)
  assert best.x > 0.5 + 1e-3  # Not the symmetric answer: the tilt moved it.
  # Entezari: max [L − 2c·t] = max 16t²(1 − t)² = 1 at t = ½ exactly.
  linear = barriers.loss_barrier(losses, ts, "linear")
  np.testing.assert_allclose(linear.height, [1.0], atol=1e-5)
  np.testing.assert_allclose(linear.t_max, [0.5], atol=1e-6)


def test_vectorized_over_pairs_and_jittable():
  cs = [0.0, 0.3, 1.0]
  a_P, b_P = _endpoints(cs)
  ts = jnp.linspace(0, 1, 257)
  losses = evaluate.evaluate_paths(double_well, "linear", a_P, b_P, ts, None)
  eager = barriers.loss_barrier(losses, ts, "linear")
  jitted = jax.jit(lambda losses_T, t: barriers.loss_barrier(losses_T, t, "linear"))(losses, ts)
  np.testing.assert_allclose(eager.height, jitted.height, rtol=1e-6)
  np.testing.assert_allclose(eager.height, [1.0, 1.0, 1.0], atol=1e-4)
  mean = barriers.loss_barrier(losses, ts, "mean").height
  assert mean[0] < mean[1] < mean[2]  # The mean definition grows with the tilt.


def test_path_from_a_network_to_itself_has_zero_barrier():
  net = {"theta": jnp.asarray([0.3, -1.2]), "c": jnp.asarray([0.5, 0.5])}
  ts = jnp.linspace(0, 1, 33)
  losses = evaluate.evaluate_paths(double_well, "linear", net, net, ts, None)
  for result in barriers.loss_barriers(losses, ts).values():
    np.testing.assert_allclose(result.height, 0.0, atol=1e-6)


def test_extrapolated_points_do_not_count():
  ts = jnp.asarray([-0.5, 0.0, 0.5, 1.0, 1.5])
  losses = jnp.asarray([[100.0, 0.0, 1.0, 0.0, 100.0]])
  np.testing.assert_allclose(barriers.loss_barrier(losses, ts).height, [1.0])


def test_explicit_endpoint_losses_and_errors():
  ts = jnp.asarray([0.25, 0.5, 0.75])
  losses = jnp.asarray([[1.0, 3.0, 1.0]])
  with pytest.raises(ValueError, match="no t = 0"):
    barriers.loss_barrier(losses, ts)
  got = barriers.loss_barrier(
    losses, ts, "linear", loss_a=jnp.asarray([0.0]), loss_b=jnp.asarray([2.0])
  )
  np.testing.assert_allclose(got.height, [2.0])
  with pytest.raises(ValueError, match="Unknown barrier kind"):
    barriers.loss_barrier(losses, ts, "max")
  with pytest.raises(ValueError, match="disagree"):
    barriers.loss_barrier(losses, ts[:2])


def test_barrier_matrix_scatters_symmetrically():
  pairs = evaluate.all_pairs(3)
  m = barriers.barrier_matrix(np.asarray([1.0, 2.0, 3.0]), pairs, 3)
  np.testing.assert_array_equal(m, [[0, 1, 2], [1, 0, 3], [2, 3, 0]])
  with pytest.raises(ValueError, match="outside"):
    barriers.barrier_matrix(np.asarray([1.0]), [[0, 3]], 3)
