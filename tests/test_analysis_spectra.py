"""Spectral statistics against numpy.linalg.svd and matrices with known ranks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import spectra


def _params():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  return {
    "hidden": {"kernel": jax.random.normal(k1, (6, 9)), "bias": jnp.ones(9)},
    "stack": jax.random.normal(k2, (3, 5, 4)),  # Batch of three 5×4 matrices.
    "head": {"kernel": jax.random.normal(k3, (9, 2))},
  }


def test_singular_values_match_numpy_and_skip_vectors():
  params = _params()
  sv = spectra.singular_values(params)
  assert set(sv) == {"hidden/kernel", "stack", "head/kernel"}
  for name, x in (
    ("hidden/kernel", params["hidden"]["kernel"]),
    ("stack", params["stack"]),
    ("head/kernel", params["head"]["kernel"]),
  ):
    np.testing.assert_allclose(sv[name], np.linalg.svd(np.asarray(x), compute_uv=False), rtol=1e-5)


def test_stats_match_their_definitions_on_random_matrices():
  w = np.asarray(_params()["hidden"]["kernel"], np.float64)
  s = np.linalg.svd(w, compute_uv=False)
  p = s / s.sum()
  stats = spectra.spectral_stats({"w": jnp.asarray(w, jnp.float32)})["w"]
  np.testing.assert_allclose(stats["sigma_max"], s[0], rtol=1e-5)
  np.testing.assert_allclose(stats["stable_rank"], np.sum(w**2) / s[0] ** 2, rtol=1e-5)
  np.testing.assert_allclose(stats["effective_rank"], np.exp(-np.sum(p * np.log(p))), rtol=1e-5)


@pytest.mark.parametrize("n", [1, 4, 16])
def test_identity_has_full_stable_and_effective_rank(n):
  stats = spectra.spectral_stats({"w": 3.0 * jnp.eye(n)})["w"]
  np.testing.assert_allclose(stats["sigma_max"], 3.0, rtol=1e-6)
  np.testing.assert_allclose(stats["stable_rank"], n, rtol=1e-5)
  np.testing.assert_allclose(stats["effective_rank"], n, rtol=1e-5)


def test_known_spectra():
  rank_one = jnp.outer(jnp.arange(1.0, 6.0), jnp.arange(1.0, 4.0))
  stats = spectra.spectral_stats({"w": rank_one})["w"]
  np.testing.assert_allclose(stats["stable_rank"], 1.0, rtol=1e-4)
  np.testing.assert_allclose(stats["effective_rank"], 1.0, rtol=1e-3)
  # σ = (4, 3, 0): stable rank 25/16, effective rank exp(H(4/7, 3/7)).
  stats = spectra.spectrum_stats(jnp.asarray([4.0, 3.0, 0.0]))
  p = np.asarray([4, 3]) / 7
  np.testing.assert_allclose(stats["stable_rank"], 25 / 16, rtol=1e-6)
  np.testing.assert_allclose(stats["effective_rank"], np.exp(-np.sum(p * np.log(p))), rtol=1e-6)
  zero = spectra.spectrum_stats(jnp.zeros(3))
  assert float(zero["stable_rank"]) == 0.0 and float(zero["effective_rank"]) == 0.0


def test_along_a_scaling_path_sigma_grows_linearly_and_ranks_stay():
  a = {"w": _params()["hidden"]["kernel"]}
  b = {"w": 3.0 * a["w"]}  # φ(t) = (1 + 2t)·W.
  ts = jnp.linspace(0, 1, 9)
  along = spectra.spectra_along_path("linear", a, b, ts, batch_size=4)["w"]
  at_a = spectra.spectral_stats(a)["w"]
  np.testing.assert_allclose(along["sigma_max"], (1 + 2 * ts) * at_a["sigma_max"], rtol=1e-5)
  np.testing.assert_allclose(along["stable_rank"], at_a["stable_rank"] * np.ones(9), rtol=1e-4)
  np.testing.assert_allclose(
    along["effective_rank"], at_a["effective_rank"] * np.ones(9), rtol=1e-4
  )
  pairs = spectra.spectra_along_paths(
    "linear", jax.tree.map(lambda x: x[None], a), jax.tree.map(lambda x: x[None], b), ts
  )
  np.testing.assert_allclose(pairs["w"]["sigma_max"][0], along["sigma_max"], rtol=1e-6)


def test_no_matrix_leaf_raises():
  with pytest.raises(ValueError, match="no matrix leaf"):
    spectra.spectral_stats({"b": jnp.ones(3)})
