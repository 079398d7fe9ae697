"""The chunked, vmapped evaluator against a plain loop of single-point calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import evaluate, paths

D_IN, WIDTH, N = 5, 7, 64


def _net(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
    "hidden": {
      "kernel": jax.random.normal(k1, (D_IN, WIDTH)),
      "bias": jax.random.normal(k2, (WIDTH,)),
    },
    "head": {"kernel": jax.random.normal(k3, (WIDTH, 1))},
  }


def _forward(p, x):
  return jax.nn.relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"]) @ p["head"]["kernel"]


def loss_fn(p, batch):
  x, y = batch
  return 0.5 * jnp.mean((_forward(p, x) - y) ** 2)


def metrics_fn(p, batch):
  x, y = batch
  pred = _forward(p, x)
  return {
    "loss": 0.5 * jnp.mean((pred - y) ** 2),
    "accuracy": jnp.mean((jnp.sign(pred) == jnp.sign(y)).astype(jnp.float32)),
  }


NETS = jax.tree.map(lambda *xs: jnp.stack(xs), *[_net(jax.random.PRNGKey(i)) for i in range(4)])
X = jax.random.normal(jax.random.PRNGKey(10), (N, D_IN))
BATCH = (X, jnp.sin(X[:, :1]))
TS = jnp.linspace(0.0, 1.0, 9)


def _loop(fn, kind, a_P, b_P, ts, bends_P=None):
  rows = []
  for p in range(jax.tree.leaves(a_P)[0].shape[0]):
    take = lambda tree: None if tree is None else jax.tree.map(lambda x: x[p], tree)
    rows.append(
      [
        fn(paths.path_point(kind, take(a_P), take(b_P), float(t), take(bends_P)), BATCH)
        for t in np.asarray(ts)
      ]
    )
  return np.asarray(rows)


@pytest.mark.parametrize("batch_size", [1, 7, 54, "auto"])
def test_chunked_evaluator_equals_a_loop(batch_size):
  a_P, b_P = evaluate.gather_pairs(NETS, evaluate.all_pairs(4))
  got = evaluate.evaluate_paths(loss_fn, "linear", a_P, b_P, TS, BATCH, batch_size=batch_size)
  assert got.shape == (6, 9)
  np.testing.assert_allclose(got, _loop(loss_fn, "linear", a_P, b_P, TS), rtol=1e-5)


def test_bezier_with_per_pair_bends_and_dict_metrics():
  a_P, b_P = evaluate.gather_pairs(NETS, [[0, 1], [2, 3]])
  bends_P = jax.tree.map(lambda x: x[:2, None] * 0.5, NETS)  # One bend per pair.
  got = evaluate.evaluate_paths(metrics_fn, "bezier", a_P, b_P, TS, BATCH, bends_P, batch_size=4)
  assert set(got) == {"loss", "accuracy"} and got["loss"].shape == (2, 9)
  for name in ("loss", "accuracy"):
    ref = _loop(lambda p, b: metrics_fn(p, b)[name], "bezier", a_P, b_P, TS, bends_P)
    np.testing.assert_allclose(got[name], ref, rtol=1e-5)


def test_endpoints_reproduce_their_own_loss_and_self_paths_are_flat():
  pairs = evaluate.all_pairs(4, include_self=True)
  a_P, b_P = evaluate.gather_pairs(NETS, pairs)
  got = np.asarray(evaluate.evaluate_paths(loss_fn, "linear", a_P, b_P, TS, BATCH))
  own = np.asarray([loss_fn(jax.tree.map(lambda x: x[i], NETS), BATCH) for i in range(4)])
  np.testing.assert_allclose(got[:, 0], own[pairs[:, 0]], rtol=1e-6)
  np.testing.assert_allclose(got[:, -1], own[pairs[:, 1]], rtol=1e-6)
  self_rows = pairs[:, 0] == pairs[:, 1]
  np.testing.assert_allclose(got[self_rows], own[pairs[self_rows, 0], None] * np.ones(9), rtol=1e-5)
  assert np.ptp(got[~self_rows], axis=1).min() > 0  # Other paths do change the loss.


def test_train_test_and_extrapolation():
  a_P, b_P = evaluate.gather_pairs(NETS, [[0, 1]])
  ts = jnp.asarray([-0.5, 0.0, 1.0, 1.5])
  out = evaluate.evaluate_train_test(
    loss_fn, "linear", a_P, b_P, ts, BATCH, (X[:8], BATCH[1][:8]), extrapolate=True
  )
  assert out["train"].shape == out["test"].shape == (1, 4)
  outside = paths.linear_path(
    jax.tree.map(lambda x: x[0], NETS), jax.tree.map(lambda x: x[1], NETS), 1.5, extrapolate=True
  )
  np.testing.assert_allclose(out["train"][0, 3], loss_fn(outside, BATCH), rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
  a_P, b_P = evaluate.gather_pairs(NETS, [[0, 1], [1, 2]])
  with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
    evaluate.evaluate_paths(loss_fn, "linear", a_P, b_P, jnp.asarray([0.0, 2.0]), BATCH)
  with pytest.raises(ValueError, match="Unknown path kind"):
    evaluate.evaluate_paths(loss_fn, "arc", a_P, b_P, TS, BATCH)
  with pytest.raises(ValueError, match="pytree structures"):
    evaluate.evaluate_paths(loss_fn, "linear", a_P, {"hidden": b_P["hidden"]}, TS, BATCH)
  with pytest.raises(ValueError, match="ts must be 1-D"):
    evaluate.evaluate_paths(loss_fn, "linear", a_P, b_P, TS[None], BATCH)
  with pytest.raises(ValueError, match="batch_size"):
    evaluate.evaluate_paths(loss_fn, "linear", a_P, b_P, TS, BATCH, batch_size=0)
  with pytest.raises(ValueError, match="pairs must have shape"):
    evaluate.gather_pairs(NETS, [0, 1])
