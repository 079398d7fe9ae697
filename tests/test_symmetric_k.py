"""The symmetric stack's K functions and row maps (optimizers/symmetric_k.py):
the equivariances of the sheet (row permutations, orthogonal maps, shared
shifts), ∇K against jax.grad of K, the duals, and the Chebyshev radius against
a brute-force smallest enclosing circle. The stack itself: tests/test_symmetric.py."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers.k_functions import get_k
from optimizers.symmetric import (
  chebyshev_radius,
  row_normalize,
)

# Runs of one shape share compiled steps (tests/conftest.py).
from tests.test_symmetric import (
  _normal,
  _orthogonal,
  ref_center,
  ref_hybrid,
  ref_nu_polar,
  ref_rownorm,
)

pytestmark = pytest.mark.usefixtures("compilation_cache")

# f32 against float64: rounding only.
ATOL = 2e-6


def _permutation(rng, n):
  return np.eye(n)[np.random.default_rng(rng).permutation(n)]


def test_rownorm_commutes_with_row_permutations_and_right_orthogonal_maps():
  m = np.asarray(_normal(3, (7, 5)), np.float64)
  p, q = _permutation(4, 7), _orthogonal(5, 5)
  u = lambda x: np.asarray(row_normalize(jnp.asarray(x, jnp.float32)), np.float64)
  np.testing.assert_allclose(u(p @ m @ q), p @ u(m) @ q, atol=1e-6)
  for recenter in (True, False):
    k = get_k("centered_rownorm", recenter=recenter)
    uc = lambda x, k=k: np.asarray(k.grad(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(uc(p @ m @ q), p @ uc(m) @ q, atol=1e-6)


@pytest.mark.parametrize(
  "name,opts",
  [
    ("centered_rownorm", {}),
    ("centered_rownorm", {"recenter": False}),
    ("left_spectral", {"method": "svd"}),
    ("left_spectral", {}),
  ],
)
def test_centered_rules_ignore_a_shared_shift(name, opts):
  """u(m + 1cᵀ) = u(m): the centered rules see only Π·m."""
  m, c = _normal(6, (8, 5)), _normal(7, (1, 5))
  k = get_k(name, **opts)
  np.testing.assert_allclose(k.grad(m + 3.0 * c), k.grad(m), rtol=2e-5, atol=2e-5)
  want = ref_center(np.asarray(m, np.float64))
  if name == "centered_rownorm":
    want = ref_rownorm(want)
    want = ref_center(want) if opts.get("recenter", True) else want
    np.testing.assert_allclose(k.grad(m), want, atol=1e-6)


def test_one_sided_polar_updates_are_orthogonally_equivariant():
  """right_spectral: u(P·m·Q) = P·u(m)·Q for orthogonal P, Q; left_spectral (centered):
  the same for orthogonal P that fix the all-ones vector (row permutations, reflections
  in 1⊥), the maps that commute with the centering."""
  m = np.asarray(_normal(8, (9, 4)), np.float64)
  p, q = _orthogonal(9, 9), _orthogonal(10, 4)
  f = lambda k, x: np.asarray(k.grad(jnp.asarray(x, jnp.float32)), np.float64)
  right = get_k("right_spectral", method="svd")
  np.testing.assert_allclose(f(right, p @ m @ q), p @ f(right, m) @ q, atol=2e-5)
  np.testing.assert_allclose(f(right, m), ref_nu_polar(m), atol=1e-5)
  left = get_k("left_spectral", method="svd")
  v = np.random.default_rng(11).normal(size=9)
  v -= v.mean()
  house = np.eye(9) - 2 * np.outer(v, v) / (v @ v)  # Orthogonal, house @ 1 = 1.
  for pm in (house, _permutation(12, 9)):
    np.testing.assert_allclose(f(left, pm @ m @ q), pm @ f(left, m) @ q, atol=2e-5)
  np.testing.assert_allclose(f(left, m), ref_nu_polar(ref_center(m)), atol=1e-5)


# ----- The registered K functions -----


@pytest.mark.parametrize(
  "name,opts",
  [
    ("centered_rownorm", {"eps": 0.0}),
    ("centered_rownorm", {"eps": 0.5}),
    ("right_spectral", {"method": "svd"}),
    ("left_spectral", {"method": "svd"}),
  ],
)
def test_grad_is_the_gradient_of_value(name, opts):
  k = get_k(name, **opts)
  x = _normal(13, (6, 4))
  np.testing.assert_allclose(k.grad(x), jax.grad(k.value)(x), rtol=2e-4, atol=2e-5)


@jax.jit
def _duals(x):
  """Everything test_duals checks, in one compiled function (eager ops compile one by one)."""
  k = get_k("centered_rownorm", eps=0.0)
  r = get_k("right_spectral", method="svd")
  h = get_k("hybrid_rownorm_spectral", method="svd")
  kg, rg = k.grad(x), r.grad(x)
  zeros = jnp.zeros((3, 4))
  return {
    "k_inner": jnp.vdot(x, kg),
    "k_value": k.value(x),
    "k_dual": k.dual_norm(kg),
    "r_inner": jnp.vdot(x, rg),
    "r_value": r.value(x),
    "r_dual": r.dual_norm(rg),
    "h_grad": h.grad(x),
    "h_value": h.value(x),
    "h_autodiff": jax.grad(h.value)(x),
    "zeros": [get_k(n).grad(zeros) for n in ZERO_KS],
  }


ZERO_KS = ("centered_rownorm", "right_spectral", "left_spectral", "hybrid_rownorm_spectral")


def test_duals_and_the_hybrid_non_gradient():
  x = _normal(14, (6, 4))
  out = _duals(x)
  # centered_rownorm is a seminorm: ⟨x, ∇K⟩ = K, and K*(∇K) = 1 (its Chebyshev radius).
  np.testing.assert_allclose(out["k_inner"], out["k_value"], rtol=1e-5)
  np.testing.assert_allclose(out["k_dual"], 1.0, rtol=1e-4)
  # right_spectral: K = ½‖·‖_*², so ⟨x, ∇K⟩ = 2K and σ_max(∇K) = ‖x‖_*.
  np.testing.assert_allclose(out["r_inner"], 2 * out["r_value"], rtol=1e-5)
  nuclear = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False).sum()
  np.testing.assert_allclose(out["r_dual"], nuclear, rtol=1e-5)
  np.testing.assert_allclose(out["h_grad"], ref_hybrid(np.asarray(x, np.float64)), atol=1e-5)
  assert float(out["h_value"]) > 0  # ⟨x, u(x)⟩ > 0: a descent direction ...
  assert not np.allclose(out["h_grad"], out["h_autodiff"], atol=1e-3)  # ... but no potential.
  for name, z in zip(ZERO_KS, out["zeros"]):
    assert not np.any(np.isnan(z)) and np.all(z == 0), name


def _reference_chebyshev(points):
  """Smallest enclosing circle of 2-D points by brute force over the circles
  through 2 and 3 of them (the optimum is one of those)."""
  best = np.inf
  for a, b in itertools.combinations(points, 2):
    c, r = (a + b) / 2, np.linalg.norm(a - b) / 2
    if np.all(np.linalg.norm(points - c, axis=1) <= r + 1e-9):
      best = min(best, r)
  for a, b, c in itertools.combinations(points, 3):
    m = 2 * np.array([b - a, c - a])
    if abs(np.linalg.det(m)) < 1e-12:
      continue
    center = np.linalg.solve(m, np.array([b @ b - a @ a, c @ c - a @ a]))
    r = np.linalg.norm(a - center)
    if np.all(np.linalg.norm(points - center, axis=1) <= r + 1e-9):
      best = min(best, r)
  return best


def test_chebyshev_radius_matches_the_smallest_enclosing_circle():
  rng = np.random.default_rng(15)
  batch = rng.normal(size=(4, 9, 2))
  got = np.asarray(chebyshev_radius(jnp.asarray(batch, jnp.float32)))
  want = np.array([_reference_chebyshev(p) for p in batch])
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # Translation invariant, so the dual of centered_rownorm ignores the shift.
  k = get_k("centered_rownorm")
  x = jnp.asarray(batch[0], jnp.float32)
  np.testing.assert_allclose(k.dual_norm(x + 5.0), want[0], rtol=1e-4)


# ----- Routing and the optax contract -----
