"""SF-NorMuon: a NumPy transcription of the reconstruction (OPTIMIZERS.md), the
sheet's facts (x_t is the uniform average of z_1…z_t with λ = 0, no warmup and
constant η; β₁ = 0 gives y = z), the evaluation iterate, and the wrappers.

Tolerance: float32 vs the float64 reference, atol 2e-5 on y and x (O(1)
weights, 6 steps of size 0.02)."""

import importlib

import jax
import numpy as np
import optax
import pytest

from optimizers.sf_normuon import ScheduleFreeNorMuonState, evaluation_params, sf_normuon
from optimizers.zoo_common import find_state
from tests.references import QUINTIC, reference_newton_schulz
from tests.zoo_wrappers import (
  cached,
  check_bf16_params,
  check_domains,
  check_inject_hyperparams,
  check_multisteps_with_schedule,
  check_vmap_over_seeds,
  run,
  run_with_states,
  small_loss,
  small_params,
  zoo_params,
)

# The module: the package attribute optimizers.sf_normuon is the alias function.
sf_module = importlib.import_module("optimizers.sf_normuon")

ATOL = 2e-5
LR, STEPS = 0.02, 6
_sf_normuon = cached(sf_normuon)


def reference_matrix_z_step(z, m, v, g, lr_t, mu, b2, wd, eps):
  """The matrix side's move of z, in the paper's (out, in) layout: ``z``, ``g``
  flax (in, out) kernels, ``m`` (out, in), ``v`` (out, 1). M ← μM + (1−μ)g,
  P = NS5(M), v ← β₂v + (1−β₂)·rowmean(P²), P̂ = P/(√v + ε),
  η̂ = 0.2·η_t·√(mn)/‖P̂‖_F, z ← z − η_t·λ·z − η̂·P̂. Returns (z, m, v)."""
  zt = z.T
  m = mu * m + (1 - mu) * g.T
  p = reference_newton_schulz(m, [QUINTIC] * 5)
  v = b2 * v + (1 - b2) * np.mean(p * p, axis=-1, keepdims=True)
  p_hat = p / (np.sqrt(v) + eps)
  eta_hat = 0.2 * lr_t * np.sqrt(p.size) / np.linalg.norm(p_hat)
  zt = zt - lr_t * wd * zt - eta_hat * p_hat
  return zt.T, m, v


def reference_adamw_z_step(z, nu, g, t, lr_t, b2, wd, eps):
  """Schedule-free AdamW's move of z (no first moment, decay at z):
  z ← z − η_t·(g/(√(ν/(1−β₂ᵗ)) + ε) + λ·z). Returns (z, nu)."""
  nu = b2 * nu + (1 - b2) * g * g
  return z - lr_t * (g / (np.sqrt(nu / (1 - b2**t)) + eps) + wd * z), nu


def _leaves(tree):
  """name -> (kind, float64 array): the four matrices and the two AdamW leaves."""
  out = {
    "dense_in": ("matrix", tree["dense_in"]["kernel"]),
    "dense_out": ("matrix", tree["dense_out"]["kernel"]),
    "stack0": ("matrix", tree["stack"][0]),
    "stack1": ("matrix", tree["stack"][1]),
    "bias": ("adam", tree["dense_in"]["bias"]),
    "wte": ("adam", tree["wte"]["embedding"]),
  }
  return {k: (kind, np.asarray(a, np.float64)) for k, (kind, a) in out.items()}


# The reference case: a warmup of 3 of the 6 steps, then constant η; λ at z on both sides.
B1, B2, MU, WD, EPS, ADAM_WD, WARMUP = 0.9, 0.95, 0.8, 0.05, 1e-8, 0.02, 3


def _reference_case():
  return _sf_normuon(
    LR, b1=B1, b2=B2, mu=MU, weight_decay=WD, warmup_steps=WARMUP, adam_weight_decay=ADAM_WD
  )


# The facts' case: λ = 0, no warmup, constant η, β₁ = 0 (the average does not
# depend on β₁, which only moves where the gradient is taken).
def _facts_case():
  return _sf_normuon(LR, b1=0.0, weight_decay=0.0, warmup_steps=0)


def test_matches_numpy_reference():
  b1, b2, mu, wd, eps, adam_wd, warmup = B1, B2, MU, WD, EPS, ADAM_WD, WARMUP
  final, state, trace = run(_reference_case(), zoo_params(), STEPS)
  start = _leaves(trace[0][0])
  z = {k: a.copy() for k, (_, a) in start.items()}
  x = {k: a.copy() for k, (_, a) in start.items()}
  m = {k: np.zeros_like(a.T) for k, (kind, a) in start.items() if kind == "matrix"}
  v = {k: np.zeros((a.shape[1], 1)) for k, (kind, a) in start.items() if kind == "matrix"}
  nu = {k: np.zeros_like(a) for k, (kind, a) in start.items() if kind == "adam"}
  lr_sq_sum, worst = 0.0, 0.0
  for t, (params, grads) in enumerate(trace, start=1):
    for k, (_, y) in _leaves(params).items():  # The params are y = (1 − β₁)z + β₁x.
      want = (1 - b1) * z[k] + b1 * x[k]
      worst = max(worst, np.abs(y - want).max())
      np.testing.assert_allclose(y, want, atol=ATOL)
    lr_t = LR * min(1.0, t / warmup)  # η·min(1, t/T), t from 1.
    lr_sq_sum += lr_t**2
    c = lr_t**2 / lr_sq_sum
    for k, (kind, g) in _leaves(grads).items():
      if kind == "matrix":
        z[k], m[k], v[k] = reference_matrix_z_step(z[k], m[k], v[k], g, lr_t, mu, b2, wd, eps)
      else:
        z[k], nu[k] = reference_adamw_z_step(z[k], nu[k], g, t, lr_t, 0.95, adam_wd, 1e-8)
      x[k] = (1 - c) * x[k] + c * z[k]
  for k, (_, got) in _leaves(evaluation_params(final, state)).items():
    worst = max(worst, np.abs(got - x[k]).max())
    np.testing.assert_allclose(got, x[k], atol=ATOL)
  for k, (_, got) in _leaves(state.z).items():
    np.testing.assert_allclose(got, z[k], atol=ATOL)
  print(f"max |jax - numpy| (warmup={warmup}): {worst:.2e}")


def test_average_is_uniform_mean_of_z():
  """λ = 0, no warmup, constant η: c_t = 1/t, so x_t = (z_1 + … + z_t)/t."""
  zs = []
  for params, state in run_with_states(_facts_case(), zoo_params(), STEPS):
    zs.append(state.z)
    mean = {k: np.mean([_leaves(z)[k][1] for z in zs], axis=0) for k in _leaves(params)}
    for k, (_, got) in _leaves(evaluation_params(params, state)).items():
      np.testing.assert_allclose(got, mean[k], atol=1e-6)


def test_b1_zero_gives_y_equal_z():
  for params, state in run_with_states(_facts_case(), zoo_params(), STEPS):
    for k, (_, y) in _leaves(params).items():
      np.testing.assert_allclose(y, _leaves(state.z)[k][1], atol=1e-7)


def test_evaluation_params_is_optax_formula_and_sees_through_wrappers():
  """x = (y − (1 − β₁)·z)/β₁, optax's schedule_free_eval_params formula, also
  when the state is wrapped (inject_hyperparams inside MultiSteps)."""
  b1 = B1
  final, state, _ = run(_reference_case(), zoo_params(), STEPS)
  recovered = {
    k: (y - (1 - b1) * _leaves(state.z)[k][1]) / b1 for k, (_, y) in _leaves(final).items()
  }
  for k, (_, got) in _leaves(evaluation_params(final, state)).items():
    np.testing.assert_allclose(got, recovered[k], atol=2e-6)
  wrapped = optax.MultiSteps(
    optax.inject_hyperparams(sf_normuon, static_args=("ns_steps",))(LR, b1=b1), 1
  )
  w_final, w_state, _ = run(wrapped, small_params(), 2, small_loss)
  sf = find_state(w_state, ScheduleFreeNorMuonState, "sf_normuon")
  jax.tree.map(np.testing.assert_allclose, evaluation_params(w_final, w_state), sf.x)
  with pytest.raises(ValueError, match="No ScheduleFreeNorMuonState"):
    evaluation_params(final, optax.adam(0.1).init(final))


def test_domains_cover_the_hyperparameters():
  check_domains(sf_normuon, sf_module.DOMAINS)
  assert sf_module.DOMAINS["b1"].check(0.0) and sf_module.DOMAINS["b1"].check(1.0)
  assert not sf_module.DOMAINS["warmup_steps"].check(-1)
  assert isinstance(sf_module.IMPLICIT_BIAS_NOTE, str)


def test_inject_hyperparams():
  check_inject_hyperparams(_sf_normuon, static_args=("ns_steps",))


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_multisteps_with_schedule():
  check_multisteps_with_schedule(_sf_normuon)


def test_vmap_over_seeds():
  check_vmap_over_seeds(_sf_normuon)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params():
  check_bf16_params(_sf_normuon)
