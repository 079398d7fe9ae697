"""γ and Φ (analysis/update_geometry.py) on cases with known answers: a linear
least-squares loss, where G, G̃ and H are closed forms, and a relu2 run's checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import training
from analysis import update_geometry
from configs import relu2 as relu2_config
from tests.config_overrides import config_with

pytestmark = pytest.mark.usefixtures("compilation_cache")  # tests/conftest.py

RNG = np.random.default_rng(0)
A_NxP = RNG.standard_normal((40, 5)).astype(np.float32)
B_N = RNG.standard_normal(40).astype(np.float32)
THETA = {"w": jnp.asarray(RNG.standard_normal(5), jnp.float32)}
MINI = np.arange(0, 40, 4)  # 10 rows


def _loss(params, batch):
  a, b = batch
  return 0.5 * jnp.mean((a @ params["w"] - b) ** 2)


def _measure(tx, rows=MINI, loss=_loss):
  full, mini = (A_NxP, B_N), (A_NxP[rows], B_N[rows])
  return update_geometry.geometry(loss, tx, THETA, tx.init(THETA), full, mini)


def test_sgd_matches_the_closed_form_and_is_scale_free():
  theta = np.asarray(THETA["w"], np.float64)
  a, b = A_NxP.astype(np.float64), B_N.astype(np.float64)
  grad = lambda rows: a[rows].T @ (a[rows] @ theta - b[rows]) / len(rows)
  g, g_mini, h = grad(np.arange(40)), grad(MINI), a.T @ a / 40
  gamma = g @ g_mini / (g_mini @ g_mini)
  phi = (g_mini @ g_mini) ** 2 / (g_mini @ h @ g_mini)
  for lr in (0.1, 3.0):  # D = −lr·G̃: both quantities ignore the step's scale
    out = _measure(optax.sgd(lr))
    np.testing.assert_allclose(float(out["gamma"]), gamma, rtol=1e-4)
    np.testing.assert_allclose(float(out["phi"]), phi, rtol=1e-4)
  assert abs(gamma - 1) > 0.1  # this minibatch is not the full batch


def test_full_batch_minibatch_has_gamma_one_for_any_optimizer():
  for tx in (optax.adam(0.01), optax.lion(0.01), optax.sgd(0.5, momentum=0.9)):
    out = _measure(tx, rows=np.arange(40))
    np.testing.assert_allclose(float(out["gamma"]), 1.0, rtol=1e-5)
    assert float(out["phi"]) > 0


def test_phi_is_nan_without_positive_curvature():
  concave = lambda p, batch: -0.5 * jnp.sum(p["w"] ** 2) + 0 * jnp.sum(batch[1])
  out = _measure(optax.sgd(0.1), loss=concave)
  assert float(out["curvature"]) < 0 and np.isnan(float(out["phi"]))


def test_minibatches_are_shared_and_checked():
  idx = update_geometry.minibatch_indices(20, 5, 3, seed=1)
  assert idx.shape == (3, 5) and all(len(set(r)) == 5 for r in idx)
  np.testing.assert_array_equal(idx, update_geometry.minibatch_indices(20, 5, 3, seed=1))
  with pytest.raises(ValueError, match="Minibatch size 30"):
    update_geometry.minibatch_indices(20, 30, 3, seed=1)


@pytest.mark.slow  # trains a relu2 run (about 10 s)
def test_relu2_checkpoint_every_seed_and_the_full_batch_limit(tmp_path):
  config = config_with(relu2_config.get_config, "runlocal,steps=20,seeds=2", checkpoint_every=10)
  training.run(config, tmp_path)
  n_train = int(config.data.n_train)
  out = update_geometry.relu2_geometry(tmp_path, 20, batch=8, count=3)
  assert out["gamma"].shape == (2, 3) and np.isfinite(out["gamma"]).all()
  full = update_geometry.relu2_geometry(tmp_path, 10, batch=n_train, count=1)
  np.testing.assert_allclose(full["gamma"], 1.0, rtol=1e-4)
  # The state is the checkpoint's: step 10 and step 20 differ.
  assert not np.allclose(
    full["slope_mini"],
    update_geometry.relu2_geometry(tmp_path, 20, batch=n_train, count=1)["slope_mini"],
  )
  jax.clear_caches()
