"""Each K of the registry: ∇K against autodiff of K, dual norms against NumPy,
and the norm-duality identities ⟨x, ∇K(x)⟩ = K(x), K*(∇K(x)) = 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers import K_FUNCTIONS, dual_norms, get_k
from tests.references import reference_dual_norms

NORM_KS = [
  ("l1", {}),
  ("l2", {}),
  ("rownorm", {}),
  ("nuclear", {"method": "svd"}),
  ("spectral", {}),
  ("schatten", {"p": 3.0}),
  ("schatten", {"p": 1.5}),
]


def _x(shape, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


@pytest.mark.parametrize("name,opts", NORM_KS + [("huber", {"e": 0.5})], ids=lambda v: str(v))
@pytest.mark.parametrize("shape", [(5, 3), (4, 7), (2, 3, 4), (6,)])
def test_grad_is_the_gradient_of_value(name, opts, shape):
  k = get_k(name, **opts)
  x = _x(shape)
  np.testing.assert_allclose(k.grad(x), jax.grad(k.value)(x), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name,opts", NORM_KS, ids=lambda v: str(v))
def test_norm_duality(name, opts):
  """For a norm K: ⟨x, ∇K(x)⟩ = K(x) and the dual norm of ∇K(x) is 1."""
  k = get_k(name, **opts)
  x = _x((6, 4), seed=3)
  g = k.grad(x)
  np.testing.assert_allclose(jnp.vdot(x, g), k.value(x), rtol=1e-4)
  np.testing.assert_allclose(k.dual_norm(g), 1.0, rtol=1e-4)


def test_dual_norms_match_numpy():
  x = np.asarray(_x((5, 7), seed=1), np.float64)
  for name, want in reference_dual_norms(x, schatten_p=3.0).items():
    opts = {"p": 3.0} if name == "schatten" else {}
    got = dual_norms(name, {"w": jnp.asarray(x, jnp.float32)}, **opts)["w"]
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=name)


def test_batched_matrices_take_the_max_over_the_batch():
  x = _x((3, 4, 5))
  want = max(np.linalg.norm(np.asarray(m), 2) for m in x)
  np.testing.assert_allclose(get_k("nuclear").dual_norm(x), want, rtol=1e-5)
  for i in range(3):  # ∇K acts on each matrix alone.
    np.testing.assert_allclose(
      get_k("nuclear", method="svd").grad(x)[i],
      get_k("nuclear", method="svd").grad(x[i]),
      atol=1e-6,
    )


def test_known_closed_forms():
  x = jnp.array([[3.0, -0.1], [0.0, 2.0]])
  np.testing.assert_array_equal(get_k("l1").grad(x), [[1, -1], [0, 1]])
  np.testing.assert_allclose(get_k("huber", e=0.5).grad(x), [[1, -0.2], [0, 1]])
  np.testing.assert_allclose(get_k("rownorm").grad(x)[1], [0, 1])
  d = jnp.diag(jnp.array([3.0, -2.0]))
  np.testing.assert_allclose(
    get_k("nuclear", method="svd").grad(d), jnp.diag(jnp.array([1.0, -1.0])), atol=1e-6
  )
  np.testing.assert_allclose(get_k("spectral").grad(d), jnp.diag(jnp.array([1.0, 0.0])), atol=1e-6)
  # Schatten-p: diag(σ^(p−1)) / ‖σ‖_p^(p−1) with signs from U, V.
  p = 3.0
  want = np.array([3.0**2, -(2.0**2)]) / (3.0**3 + 2.0**3) ** ((p - 1) / p)
  np.testing.assert_allclose(get_k("schatten", p=p).grad(d), np.diag(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(K_FUNCTIONS))
def test_zero_maps_to_zero(name):
  k = get_k(name)
  out = k.grad(jnp.zeros((3, 4)))
  assert out.shape == (3, 4) and not np.any(np.isnan(out))
  np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_unknown_k_and_bad_options_are_named():
  with pytest.raises(ValueError, match="Unknown K 'l7'.*known: .*'l1'"):
    get_k("l7")
  with pytest.raises(ValueError, match="Bad options.*nuclear"):
    get_k("nuclear", pp=3)
  with pytest.raises(ValueError, match="1 < p < inf"):
    get_k("schatten", p=1.0)
  with pytest.raises(ValueError, match="Unknown orthogonalization method"):
    get_k("nuclear", method="qr")
