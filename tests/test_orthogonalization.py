"""Newton–Schulz and the exact polar factor against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers import newton_schulz, ns_coefficients, orthogonalize, polar_svd
from tests.references import QUINTIC, composed_polynomial, reference_newton_schulz, reference_polar


def _g(shape, seed=0):
  return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), shape), np.float32)


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (24, 24), (8, 100)])
@pytest.mark.parametrize("gram", [False, True])
def test_quintic_matches_reference(shape, gram):
  g = _g(shape)
  want = reference_newton_schulz(g, [QUINTIC] * 5)
  got = newton_schulz(jnp.asarray(g), steps=5, coeffs="quintic", gram=gram)
  assert got.shape == shape
  np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("preset", ["polar_express", "cubic"])
def test_presets_match_reference(preset):
  g = _g((20, 60), seed=1)
  table, safety = ns_coefficients(preset, 8)
  want = reference_newton_schulz(g, table, safety)
  for gram in (False, True):
    np.testing.assert_allclose(newton_schulz(jnp.asarray(g), 8, preset, gram=gram), want, atol=5e-5)


def test_polar_express_table_is_the_papers():
  table, safety = ns_coefficients("polar_express", 10)
  assert safety == 1.01
  np.testing.assert_allclose(
    table[0], [8.28721201814563 / 1.01, -23.595886519098837 / 1.01**3, 17.300387312530933 / 1.01**5]
  )
  np.testing.assert_allclose(table[7:], [[1.875, -1.25, 0.375]] * 3)  # The tail repeats.


def test_svd_method_is_numpys_u_vt():
  for shape in [(7, 12), (12, 7), (9, 9)]:
    g = _g(shape, seed=2)
    np.testing.assert_allclose(
      orthogonalize(jnp.asarray(g), method="svd"), reference_polar(g), atol=1e-5
    )


def test_svd_of_rank_deficient_input_is_the_polar_factor_of_its_range():
  u = np.linalg.qr(_g((10, 2), seed=3))[0]
  v = np.linalg.qr(_g((6, 2), seed=4))[0]
  g = u @ np.diag([5.0, 0.5]) @ v.T
  np.testing.assert_allclose(polar_svd(jnp.asarray(g, jnp.float32)), u @ v.T, atol=1e-5)
  np.testing.assert_array_equal(polar_svd(jnp.zeros((4, 3))), 0.0)


def _singular_values(x):
  return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


def test_quintic_singular_values_land_in_the_known_band():
  """Five quintic steps map every σ/‖X‖_F ≥ 0.01 into [0.682, 1.134] (DESIGN.md's
  "about [0.68, 1.13]"), and no input above p∘p∘p∘p∘p's sup over (0, 1], 1.2024."""
  grid = np.linspace(1e-6, 1, 200_001)
  image = composed_polynomial(grid, [QUINTIC] * 5)
  band = image[grid >= 0.01]
  np.testing.assert_allclose(
    [band.min(), band.max(), image.max()], [0.6818, 1.1344, 1.2024], atol=1e-4
  )
  rng = np.random.default_rng(0)
  for shape in [(64, 256), (128, 128), (300, 50)]:
    m = min(shape)
    u = np.linalg.qr(rng.normal(size=(shape[0], m)))[0]
    v = np.linalg.qr(rng.normal(size=(shape[1], m)))[0]
    s_in = np.geomspace(1.0, 0.1, m)
    assert s_in.min() / np.linalg.norm(s_in) >= 0.01  # Inside the band's premise.
    g = jnp.asarray(u @ np.diag(s_in) @ v.T, jnp.float32)
    s = _singular_values(newton_schulz(g, 5, "quintic"))
    assert 0.68 < s.min() and s.max() < 1.135, (shape, s.min(), s.max())
    s_pe = _singular_values(newton_schulz(g, 8, "polar_express"))
    assert np.abs(s_pe - 1).max() < 0.02 < np.abs(s - 1).max()
    s_gauss = _singular_values(newton_schulz(jnp.asarray(_g(shape)), 5, "quintic"))
    assert s_gauss.max() <= image.max() + 1e-4


def test_batched_leading_axes_and_zero_input():
  g = _g((3, 2, 12, 20))
  got = newton_schulz(jnp.asarray(g))
  for i in range(3):
    for j in range(2):
      np.testing.assert_allclose(
        got[i, j], reference_newton_schulz(g[i, j], [QUINTIC] * 5), atol=2e-5
      )
  np.testing.assert_array_equal(newton_schulz(jnp.zeros((5, 8))), 0.0)


def test_bf16_compute_dtype_keeps_the_parameter_dtype():
  g = jnp.asarray(_g((32, 64), 5))
  out = newton_schulz(g, compute_dtype=jnp.bfloat16)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, newton_schulz(g), atol=0.05)
  out_bf16 = newton_schulz(g.astype(jnp.bfloat16))
  assert out_bf16.dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(out_bf16, np.float32)).all()


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="rank >= 2"):
    newton_schulz(jnp.ones(4))
  with pytest.raises(ValueError, match="Unknown Newton-Schulz preset 'quntic'"):
    newton_schulz(jnp.ones((2, 2)), coeffs="quntic")
  with pytest.raises(ValueError, match="ns_steps must be >= 1"):
    newton_schulz(jnp.ones((2, 2)), steps=0)
  with pytest.raises(ValueError, match="Unknown orthogonalization method"):
    orthogonalize(jnp.ones((2, 2)), method="qr")
