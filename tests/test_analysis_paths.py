"""Paths against closed forms: endpoints, quadratic/cubic Bézier, polychain
midpoints, linear extrapolation, and one-line errors on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import paths


def _tree(seed, shape=(3, 4)):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {"w": jax.random.normal(k1, shape), "b": {"v": jax.random.normal(k2, (shape[1],))}}


def _stack(*trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _close(x, y, atol=1e-6):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=atol, rtol=1e-6), x, y)


A, B, C, D = (_tree(i) for i in range(4))


@pytest.mark.parametrize(
  "kind,bends",
  [
    ("linear", None),
    ("polychain", _stack(C)),
    ("polychain", _stack(C, D)),
    ("bezier", _stack(C)),
    ("bezier", _stack(C, D)),
  ],
)
def test_paths_start_at_a_and_end_at_b(kind, bends):
  _close(paths.path_point(kind, A, B, 0.0, bends), A)
  _close(paths.path_point(kind, A, B, 1.0, bends), B)


def test_quadratic_bezier_matches_closed_form():
  for t in (0.1, 0.37, 0.5, 0.9):
    expected = jax.tree.map(
      lambda a, c, b: (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t**2 * b, A, C, B
    )
    _close(paths.bezier_path(A, B, _stack(C), t), expected)


def test_cubic_bezier_matches_closed_form():
  t = 0.3
  expected = jax.tree.map(
    lambda a, c, d, b: (
      (1 - t) ** 3 * a + 3 * t * (1 - t) ** 2 * c + 3 * t**2 * (1 - t) * d + t**3 * b
    ),
    A,
    C,
    D,
    B,
  )
  _close(paths.bezier_path(A, B, _stack(C, D), t), expected)


def test_polychain_passes_through_bends_and_segment_midpoints():
  # One bend: φ(½) = bend, φ(¼) = midpoint of a and the bend (Garipov et al.).
  _close(paths.polychain_path(A, B, _stack(C), 0.5), C)
  _close(paths.polychain_path(A, B, _stack(C), 0.25), jax.tree.map(lambda a, c: (a + c) / 2, A, C))
  _close(paths.polychain_path(A, B, _stack(C), 0.75), jax.tree.map(lambda c, b: (c + b) / 2, C, B))
  # Two bends: knots at 1/3 and 2/3, the middle segment's midpoint at ½.
  bends = _stack(C, D)
  _close(paths.polychain_path(A, B, bends, 1 / 3), C, atol=1e-5)
  _close(paths.polychain_path(A, B, bends, 2 / 3), D, atol=1e-5)
  _close(paths.polychain_path(A, B, bends, 0.5), jax.tree.map(lambda c, d: (c + d) / 2, C, D))


def test_linear_path_and_extrapolation():
  _close(paths.linear_path(A, B, 0.25), jax.tree.map(lambda a, b: 0.75 * a + 0.25 * b, A, B))
  _close(
    paths.linear_path(A, B, 1.5, extrapolate=True),
    jax.tree.map(lambda a, b: b + 0.5 * (b - a), A, B),
    atol=1e-5,
  )
  _close(
    paths.linear_path(A, B, -0.5, extrapolate=True),
    jax.tree.map(lambda a, b: a - 0.5 * (b - a), A, B),
    atol=1e-5,
  )


@pytest.mark.parametrize("kind", ["polychain", "bezier"])
@pytest.mark.parametrize("k", [1, 3])
def test_bends_on_the_line_give_the_linear_path(kind, k):
  bends = paths.initial_bends(A, B, k)
  for t in (0.1, 0.45, 0.8):
    _close(paths.path_point(kind, A, B, t, bends), paths.linear_path(A, B, t), atol=1e-5)


@pytest.mark.parametrize(
  "kind,k", [("linear", 0), ("polychain", 1), ("polychain", 4), ("bezier", 1), ("bezier", 4)]
)
def test_weights_are_a_partition_of_unity_and_nonnegative(kind, k):
  w = paths.path_weights(kind, k, jnp.linspace(0, 1, 101))
  assert w.shape == (101, k + 2)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert float(w.min()) >= 0.0


def test_interpolate_points_and_map_along_path_agree_with_path_point():
  ts = jnp.linspace(0, 1, 5)
  stacked = paths.interpolate_points("bezier", A, B, ts, _stack(C))
  mapped = paths.map_along_path(lambda p: p, "bezier", A, B, ts, _stack(C), batch_size=2)
  for i, t in enumerate(np.asarray(ts)):
    one = paths.path_point("bezier", A, B, float(t), _stack(C))
    _close(jax.tree.map(lambda x: x[i], stacked), one)
    _close(jax.tree.map(lambda x: x[i], mapped), one)


def test_jit_and_vmap_over_t():
  f = jax.jit(jax.vmap(lambda t: paths.bezier_path(A, B, _stack(C), t)))
  out = f(jnp.asarray([0.0, 0.5]))
  _close(jax.tree.map(lambda x: x[0], out), A)
  _close(
    jax.tree.map(lambda x: x[1], out),
    jax.tree.map(lambda a, c, b: 0.25 * a + 0.5 * c + 0.25 * b, A, C, B),
  )


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="different pytree structures"):
    paths.linear_path(A, {"w": A["w"]}, 0.5)
  with pytest.raises(ValueError, match="shape"):
    paths.linear_path(A, _tree(1, shape=(3, 5)), 0.5)
  with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
    paths.linear_path(A, B, 1.2)
  with pytest.raises(ValueError, match="Only the linear path extrapolates"):
    paths.path_point("bezier", A, B, 1.2, _stack(C), extrapolate=True)
  with pytest.raises(ValueError, match="Unknown path kind"):
    paths.path_point("spline", A, B, 0.5)
  with pytest.raises(ValueError, match="bends leaf"):
    paths.bezier_path(A, B, C, 0.5)  # No leading bend axis.
  with pytest.raises(ValueError, match="takes no bends"):
    paths.path_weights("linear", 1, 0.5)
