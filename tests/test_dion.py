"""Dion: a NumPy transcription of the authors' dion_update (microsoft/dion,
dion_simple.py), the sheet's facts (PᵀP = I; at full rank the error feedback is
M ← μM; for a fixed M, power iteration gives the rank-r truncated polar
factor), the rank convention, and the wrappers.

Tolerance: float32 vs the float64 reference, atol 2e-5 on O(1) weights after 6
steps of size 0.02."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers.dion import (
  ScaleByDionState,
  dion,
  dion_rank,
  power_iteration_step,
  scale_by_dion,
)
from optimizers.zoo_common import find_state
from tests.zoo_wrappers import (
  cached,
  check_bf16_params,
  check_domains,
  check_inject_hyperparams,
  check_multisteps_with_schedule,
  check_vmap_over_seeds,
  init_state,
  run,
  zoo_params,
)

# The module: the package attribute optimizers.dion is the alias function.
dion_module = importlib.import_module("optimizers.dion")

ATOL = 2e-5
LR, STEPS = 0.02, 6
_dion = cached(dion)


def reference_dion_step(kernel, grad, m, q, lr, mu, wd, eps=1e-8):
  """One Dion step in the authors' (out, in) layout: M ← M + G; P = QR(M·Q).Q;
  R = Mᵀ·P; M ← M − (1 − μ)·P·Rᵀ; Q ← R/(‖R‖_col + ε);
  W ← (1 − ηλ)·W − η·√(out/in)·P·Qᵀ. ``kernel``, ``grad``: flax (in, out);
  ``m`` (out, in), ``q`` (in, r). Returns (kernel, m, q)."""
  w = kernel.T
  m = m + grad.T
  p, _ = np.linalg.qr(m @ q)
  r = m.T @ p
  m = m - (1 - mu) * p @ r.T
  q = r / (np.linalg.norm(r, axis=0, keepdims=True) + eps)
  fan_out, fan_in = w.shape
  w = (1 - lr * wd) * w - lr * np.sqrt(fan_out / fan_in) * p @ q.T
  return w.T, m, q


def _matrices(tree):
  return {
    "dense_in": np.asarray(tree["dense_in"]["kernel"], np.float64),
    "dense_out": np.asarray(tree["dense_out"]["kernel"], np.float64),
    **{f"stack{i}": np.asarray(tree["stack"][i], np.float64) for i in range(2)},
  }


def test_matches_numpy_reference():
  """rank 0.5: r = 3 of the 6×10 kernel, 2 of the 10×4 and of each 4×4."""
  mu, wd = 0.9, 0.05
  opt = _dion(LR, rank=0.5, mu=mu, weight_decay=wd)
  final, _, trace = run(opt, zoo_params(), STEPS)
  q0 = find_state(init_state(opt, zoo_params()), ScaleByDionState, "dion").q  # Random start.
  ws = _matrices(trace[0][0])
  qs = _matrices(q0)
  assert {k: q.shape[-1] for k, q in qs.items()} == {
    "dense_in": 3,
    "dense_out": 2,
    "stack0": 2,
    "stack1": 2,
  }
  ms = {k: np.zeros_like(w.T) for k, w in ws.items()}
  worst = 0.0
  for params, grads in trace:
    for k, got in _matrices(params).items():
      worst = max(worst, np.abs(got - ws[k]).max())
      np.testing.assert_allclose(got, ws[k], atol=ATOL)
    for k, g in _matrices(grads).items():
      ws[k], ms[k], qs[k] = reference_dion_step(ws[k], g, ms[k], qs[k], LR, mu, wd)
  for k, got in _matrices(final).items():
    worst = max(worst, np.abs(got - ws[k]).max())
    np.testing.assert_allclose(got, ws[k], atol=ATOL)
  print(f"max |jax - numpy|: {worst:.2e}")


def test_p_has_orthonormal_columns():
  """A stack of (in=5, out=9) kernels at rank 3: P is 9×3 with PᵀP = I, and Q's
  columns have unit norm."""
  rng = np.random.default_rng(0)
  m = jnp.asarray(rng.normal(size=(2, 5, 9)), jnp.float32)
  q = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
  p, q_new, _ = jax.jit(power_iteration_step)(m, q, 0.95)
  assert p.shape == (2, 9, 3)
  np.testing.assert_allclose(
    jnp.swapaxes(p, -1, -2) @ p, np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-5
  )
  np.testing.assert_allclose(jnp.linalg.norm(q_new, axis=-2), 1.0, rtol=1e-5)


def test_full_rank_error_feedback_is_momentum():
  """At full rank P·Rᵀ = M, so M ← μ·(M + G): after two steps μ²G₁ + μG₂."""
  mu = 0.9
  shapes = {"wide": (4, 7), "tall": (7, 4), "stacked": (2, 5, 5)}
  tx = scale_by_dion(rank=1.0, mu=mu)
  state = jax.jit(tx.init)({k: jnp.zeros(s) for k, s in shapes.items()})
  rng = np.random.default_rng(3)
  g1, g2 = (
    {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()} for _ in "12"
  )
  update = jax.jit(tx.update)
  _, state = update(g1, state)
  _, state = update(g2, state)
  for k in shapes:
    np.testing.assert_allclose(state.mu[k], mu**2 * g1[k] + mu * g2[k], atol=1e-5)


def test_power_iteration_converges_to_truncated_polar_factor():
  """μ = 1 and no gradient after the first step keep M fixed; the direction
  √(out/in)·(P·Qᵀ)ᵀ then tends to √(out/in)·U_r·V_rᵀ (kernel layout)."""
  sigma = np.array([5.0, 4.0, 3.0, 1.0, 0.5, 0.2])
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(8, 6)))
  v, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  m = u @ np.diag(sigma) @ v.T  # A (in=8, out=6) kernel.
  r = 3
  want = np.sqrt(6 / 8) * u[:, :r] @ v[:, :r].T
  tx = scale_by_dion(rank=r, mu=1.0)
  g = {"w": jnp.asarray(m, jnp.float32)}
  state = jax.jit(tx.init)(g)
  update = jax.jit(tx.update)
  d, state = update(g, state)
  first = np.abs(np.asarray(d["w"]) - want).max()
  zero = {"w": jnp.zeros_like(g["w"])}
  for _ in range(60):  # Error per step ≈ (σ₂/σ₁)² = 0.64 on the slowest pair.
    d, state = update(zero, state)
  np.testing.assert_allclose(state.mu["w"], m, atol=1e-5)  # M did not move.
  np.testing.assert_allclose(d["w"], want, atol=1e-5)
  assert first > 1e-2  # A random Q is not there after one step.


def test_rank_convention_and_domains():
  assert dion_rank(0.25, (768, 3072)) == 192
  assert dion_rank(768, (10, 4)) == 4
  assert dion_rank(1, (6, 10)) == 1 and dion_rank(1.0, (6, 10)) == 6
  assert dion_rank(0.01, (6, 10)) == 1
  for bad in (0, 1.5, True, -0.5, "full"):
    with pytest.raises(ValueError, match="Dion rank"):
      dion(0.1, rank=bad)
    assert not dion_module.DOMAINS["rank"].check(bad)
  check_domains(dion, dion_module.DOMAINS)
  assert isinstance(dion_module.IMPLICIT_BIAS_NOTE, str)


def test_q_init_is_deterministic_per_seed():
  p = zoo_params()
  q = lambda seed: find_state(init_state(_dion(LR, seed=seed), p), ScaleByDionState, "dion").q
  jax.tree.map(np.testing.assert_array_equal, q(0), q(0))
  assert not np.allclose(q(0)["stack"], q(1)["stack"])
  assert not np.allclose(q(0)["stack"][0], q(0)["stack"][1])  # One Q per stacked matrix.


def test_inject_hyperparams():
  check_inject_hyperparams(_dion, static_args=("rank",))


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_multisteps_with_schedule():
  check_multisteps_with_schedule(_dion)


def test_vmap_over_seeds():
  check_vmap_over_seeds(_dion)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params():
  check_bf16_params(_dion)
