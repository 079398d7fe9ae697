"""MiMuon: a NumPy transcription of the reconstruction (OPTIMIZERS.md, grade C),
its two branches (well-separated singular values take the Muon step, a repeated
one the SGD step), the per-matrix Muon-branch counter, and the wrappers.

Tolerance: float32 vs the float64 reference, atol 2e-5 on O(1) weights after 6
steps of size 0.02 (as Muon's test); the branch taken must agree exactly."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers.mimuon import mimuon, muon_branch_fraction, scale_by_mimuon
from tests.references import QUINTIC, reference_newton_schulz
from tests.zoo_wrappers import (
  cached,
  check_bf16_params,
  check_domains,
  check_inject_hyperparams,
  check_multisteps_with_schedule,
  check_vmap_over_seeds,
  run,
  zoo_params,
)

# The module: the package attribute optimizers.mimuon is the alias function.
mimuon_module = importlib.import_module("optimizers.mimuon")

ATOL = 2e-5
LR, STEPS = 0.02, 6
_mimuon = cached(mimuon)


def reference_gap(m, gap_scale):
  """κ: the smallest σ_i − σ_{i+1} over consecutive nonzero singular values
  (nonzero: above numpy.linalg.matrix_rank's tolerance at float32 eps), over σ₁
  when relative; inf with fewer than two nonzero."""
  s = np.linalg.svd(m, compute_uv=False)
  s = s[s > s[0] * max(m.shape) * np.finfo(np.float32).eps]
  if len(s) < 2:
    return np.inf
  kappa = np.min(s[:-1] - s[1:])
  return kappa / s[0] if gap_scale == "relative" else kappa


def reference_mimuon_step(kernel, grad, m, lr, beta, tau, wd, gap_scale="relative"):
  """One MiMuon step: M ← βG + (1−β)M; Muon step η·NS5(M) if κ(M) ≥ τ, else
  η·M; decoupled decay. Singular values and msign commute with transposition,
  so the flax (in, out) kernel is used as is. Returns (kernel, m, took_muon)."""
  m = beta * grad + (1 - beta) * m
  took = reference_gap(m, gap_scale) >= tau
  d = reference_newton_schulz(m, [QUINTIC] * 5) if took else m
  return kernel * (1 - lr * wd) - lr * d, m, took


def _matrices(tree):
  return {
    "dense_in": np.asarray(tree["dense_in"]["kernel"], np.float64),
    "dense_out": np.asarray(tree["dense_out"]["kernel"], np.float64),
    **{f"stack{i}": np.asarray(tree["stack"][i], np.float64) for i in range(2)},
  }


def _counts(tree):
  return {
    "dense_in": tree["dense_in"]["kernel"],
    "dense_out": tree["dense_out"]["kernel"],
    "stack0": tree["stack"][0],
    "stack1": tree["stack"][1],
  }


@pytest.mark.parametrize(
  "tau, gap, gap_scale",
  [(1e-3, "svd", "relative"), (2.0, "svd", "relative"), (0.02, "estimate", "absolute")],
)
def test_matches_numpy_reference(tau, gap, gap_scale):
  """τ = 1e−3: the Muon branch; τ = 2 (relative gaps are ≤ 1): always SGD; the
  absolute τ = 0.02 mixes both (checked below). No κ of the float64 run lies
  within 1% of τ, so float32 rounding cannot flip a branch."""
  beta, wd = 0.2, 0.05
  opt = _mimuon(LR, beta=beta, tau=tau, gap=gap, gap_scale=gap_scale, weight_decay=wd)
  final, state, trace = run(opt, zoo_params(), STEPS)
  ws = _matrices(trace[0][0])
  ms = {k: np.zeros_like(w) for k, w in ws.items()}
  muon_steps = dict.fromkeys(ws, 0)
  worst = 0.0
  for params, grads in trace:
    for k, got in _matrices(params).items():
      worst = max(worst, np.abs(got - ws[k]).max())
      np.testing.assert_allclose(got, ws[k], atol=ATOL)
    for k, g in _matrices(grads).items():
      ws[k], ms[k], took = reference_mimuon_step(ws[k], g, ms[k], LR, beta, tau, wd, gap_scale)
      muon_steps[k] += took
      assert abs(reference_gap(ms[k], gap_scale) - tau) > 0.01 * tau, (k, "κ too close to τ")
  for k, got in _matrices(final).items():
    worst = max(worst, np.abs(got - ws[k]).max())
    np.testing.assert_allclose(got, ws[k], atol=ATOL)
  fraction = _counts(muon_branch_fraction(state))
  for k, steps in muon_steps.items():
    np.testing.assert_allclose(fraction[k], steps / STEPS)
  total = sum(muon_steps.values())
  if tau == 2.0:
    assert total == 0
  elif tau == 1e-3:
    assert total == 4 * STEPS
  else:
    assert 0 < total < 4 * STEPS, muon_steps  # Both branches occur.
  print(f"max |jax - numpy| (tau={tau}, {gap}, {gap_scale}): {worst:.2e}; Muon steps {muon_steps}")


def _with_singular_values(sigma, shape, seed):
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(shape[0], len(sigma))))
  v, _ = np.linalg.qr(rng.normal(size=(shape[1], len(sigma))))
  return u @ np.diag(sigma) @ v.T, u @ v.T


@pytest.mark.parametrize("gap", ["svd", "estimate"])
def test_separated_takes_muon_branch_and_repeated_takes_sgd(gap):
  """A stack of two 3×5 matrices, σ = (3, 2, 1) and σ = (2, 2, 1): β = 1 so
  M = G; the first step is U·Vᵀ (exact, method="svd"), the second G itself."""
  separated, polar = _with_singular_values([3.0, 2.0, 1.0], (3, 5), 0)
  repeated, _ = _with_singular_values([2.0, 2.0, 1.0], (3, 5), 1)
  g = jnp.asarray(np.stack([separated, repeated]), jnp.float32)
  tx = scale_by_mimuon(beta=1.0, tau=0.1, gap=gap, method="svd")
  d, state = jax.jit(tx.update)(g, tx.init(g))
  np.testing.assert_allclose(d[0], polar, atol=1e-5)
  np.testing.assert_allclose(d[1], repeated, atol=1e-6)
  np.testing.assert_array_equal(state.muon_steps, [1, 0])
  np.testing.assert_allclose(muon_branch_fraction(state), [1.0, 0.0])


@pytest.mark.parametrize("gap", ["svd", "estimate"])
def test_gap_every_keeps_the_last_checked_branch_between_checks(gap):
  """β = 1 (M = G), one 3×5 matrix: step 0 σ = (3, 2, 1) takes Muon; steps 1–3 σ = (2, 2, 1)
  would take SGD. Every step (gap_every 1): Muon, SGD, SGD, SGD. gap_every 3: the gap is
  measured at steps 0 and 3 only, so steps 1 and 2 keep step 0's Muon branch (msign of their
  own M), step 3 measures again and takes SGD; also under jit and vmap over seeds."""
  separated, _ = _with_singular_values([3.0, 2.0, 1.0], (3, 5), 0)
  repeated, repeated_polar = _with_singular_values([2.0, 2.0, 1.0], (3, 5), 1)
  grads = [jnp.asarray(x, jnp.float32) for x in (separated, repeated, repeated, repeated)]
  branches = {}
  for every in (1, 3):
    tx = scale_by_mimuon(beta=1.0, tau=0.1, gap=gap, method="svd", gap_every=every)
    update, state, taken = jax.jit(tx.update), tx.init(grads[0]), []
    for step, g in enumerate(grads):
      d, state = update(g, state)
      muon = step > 0 and np.allclose(d, repeated_polar, atol=1e-5)
      assert muon or step == 0 or np.allclose(d, repeated, atol=1e-6), (every, step)
      taken.append(bool(state.take_muon))
    branches[every] = (taken, int(state.muon_steps))
  assert branches[1] == ([True, False, False, False], 1)
  assert branches[3] == ([True, True, True, False], 3)
  # Under vmap over two seeds (the lax.cond becomes a select of both sides): the same.
  tx = scale_by_mimuon(beta=1.0, tau=0.1, gap=gap, method="svd", gap_every=3)
  update, state = jax.jit(jax.vmap(tx.update)), jax.vmap(tx.init)(jnp.stack([grads[0]] * 2))
  for g in grads[:3]:
    d, state = update(jnp.stack([g, g]), state)
  np.testing.assert_allclose(d[1], repeated_polar, atol=1e-5)
  np.testing.assert_array_equal(state.muon_steps, [3, 3])
  with pytest.raises(ValueError, match="gap_every must be an int >= 1"):
    scale_by_mimuon(gap_every=0)


def test_gram_eigenvalues_match_numpy_on_a_stack():
  """The eigenvalues-only path (tridiagonalization + bisection) against
  numpy.linalg.eigvalsh in float64, on a (2, 3) stack of Gram matrices with a
  repeated eigenvalue and a zero one (rank 5 of 6)."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 3, 6, 5))
  grams = x @ np.swapaxes(x, -1, -2)
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  grams[0, 0] = q @ np.diag([4.0, 4.0, 2.0, 1.0, 0.5, 0.0]) @ q.T
  got = np.asarray(jax.jit(mimuon_module.gram_eigenvalues)(jnp.asarray(grams, jnp.float32)))
  want = np.linalg.eigvalsh(grams)
  assert got.shape == want.shape == (2, 3, 6)
  scale = np.abs(want).max(axis=-1, keepdims=True)
  np.testing.assert_allclose(got / scale, want / scale, atol=2e-6)


def test_errors_and_domains():
  for bad in (dict(gap="lanczos"), dict(gap_scale="log"), dict(method="qr"), dict(scale="x")):
    with pytest.raises(ValueError, match="Unknown MiMuon"):
      mimuon(0.1, **bad)
  check_domains(mimuon, mimuon_module.DOMAINS)
  assert mimuon_module.DOMAINS["beta"].check(1.0) and not mimuon_module.DOMAINS["beta"].check(0)
  assert isinstance(mimuon_module.IMPLICIT_BIAS_NOTE, str)


def test_inject_hyperparams():
  check_inject_hyperparams(_mimuon, static_args=("ns_steps", "gap_every"))


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_multisteps_with_schedule():
  check_multisteps_with_schedule(_mimuon)


def test_vmap_over_seeds():
  _, state_S = check_vmap_over_seeds(_mimuon)
  # The counter has the seed axis in front of the stack axis; fractions per seed.
  fraction = muon_branch_fraction(state_S)["blocks"]
  assert fraction.shape == (2, 2)
  np.testing.assert_allclose(fraction, 1.0)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params():
  check_bf16_params(_mimuon)
