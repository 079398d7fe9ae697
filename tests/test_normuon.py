"""NorMuon: a NumPy transcription of the authors' normuon_update, the sheet's
facts (the code form keeps ‖O‖_F, the paper form has RMS 0.2·η), and the
wrappers (jit, inject_hyperparams, MultiSteps, vmap over seeds, bf16).

Tolerance: float32 vs the float64 reference, atol 2e-5 on weights of O(1) after
6 steps of size 0.02 (NS5 amplifies f32 rounding of the smallest singular
values by up to ≈ 3.4⁵)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers.normuon import normuon, scale_by_normuon
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

# The module: the package attribute optimizers.normuon is the alias function.
normuon_module = importlib.import_module("optimizers.normuon")

ATOL = 2e-5


def reference_normuon_step(kernel, grad, m, v, lr, beta, beta2, wd, nesterov, form, eps=1e-10):
  """One NorMuon step in the authors' (out, in) layout (zichongli5/NorMuon,
  normuon.py: lerp momentum, Nesterov lerp, NS5, v = lerp of the row means of
  O², Frobenius-preserving rescale, √max(1, rows/cols), decoupled decay; or the
  paper's 0.2·√(mn)/‖Ô‖_F). ``kernel``, ``grad``: the flax (in, out) matrices;
  ``m`` (out, in) and ``v`` (out, 1) in the authors' layout. Returns (kernel, m, v)."""
  w, g = kernel.T, grad.T
  m = beta * m + (1 - beta) * g
  u = (1 - beta) * g + beta * m if nesterov else m
  o = reference_newton_schulz(u, [QUINTIC] * 5)
  v = beta2 * v + (1 - beta2) * np.mean(o * o, axis=-1, keepdims=True)
  o_hat = o / (np.sqrt(v) + eps)
  if form == "code":
    o_hat = o_hat * np.linalg.norm(o) / (np.linalg.norm(o_hat) + eps)
    o_hat = o_hat * max(1.0, w.shape[0] / w.shape[1]) ** 0.5
  else:
    o_hat = o_hat * 0.2 * np.sqrt(o.size) / (np.linalg.norm(o_hat) + eps)
  w = w * (1 - lr * wd) - lr * o_hat
  return w.T, m, v


def _adam_leaves(tree):
  return {"bias": tree["dense_in"]["bias"], "wte": tree["wte"]["embedding"]}


def _matrices(tree):
  """The NorMuon leaves of a zoo tree, one (in, out) matrix per entry, float64."""
  return {
    "dense_in": np.asarray(tree["dense_in"]["kernel"], np.float64),
    "dense_out": np.asarray(tree["dense_out"]["kernel"], np.float64),
    **{f"stack{i}": np.asarray(tree["stack"][i], np.float64) for i in range(2)},
  }


def reference_adamw_step(w, g, m, v, t, lr, b1, b2, eps, wd):
  """optax.adamw's step (bias-corrected moments, decoupled decay). Returns (w, m, v)."""
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
  return w - lr * (u + wd * w), m, v


_normuon = cached(normuon)
# (form, nesterov, λ): the authors' default, and the paper form without λ (RMS fact below).
CASES = [("code", True, 0.1), ("paper", False, 0.0)]
LR, BETA, BETA2, STEPS = 0.02, 0.9, 0.95, 6


def _case_opt(form, nesterov, wd):
  return _normuon(
    LR, beta=BETA, beta2=BETA2, nesterov=nesterov, form=form, weight_decay=wd, adam_weight_decay=0.1
  )


@pytest.mark.parametrize("form, nesterov, wd", CASES)
def test_matches_numpy_reference(form, nesterov, wd):
  final, _, trace = run(_case_opt(form, nesterov, wd), zoo_params(), STEPS)
  ws = _matrices(trace[0][0])
  ms = {k: np.zeros_like(w.T) for k, w in ws.items()}
  vs = {k: np.zeros((w.shape[1], 1)) for k, w in ws.items()}
  # The AdamW side (bias, embedding): optax.adamw's rule with the adam_* values.
  adam = {k: np.asarray(v, np.float64) for k, v in _adam_leaves(trace[0][0]).items()}
  adam_m = {k: np.zeros_like(v) for k, v in adam.items()}
  adam_v = {k: np.zeros_like(v) for k, v in adam.items()}
  worst = 0.0
  for t, (params, grads) in enumerate(trace, start=1):
    for k, got in _matrices(params).items():
      worst = max(worst, np.abs(got - ws[k]).max())
      np.testing.assert_allclose(got, ws[k], atol=ATOL)
    for k, g in _matrices(grads).items():
      ws[k], ms[k], vs[k] = reference_normuon_step(
        ws[k], g, ms[k], vs[k], LR, BETA, BETA2, wd, nesterov, form
      )
    for k, g in _adam_leaves(grads).items():
      adam[k], adam_m[k], adam_v[k] = reference_adamw_step(
        adam[k], np.asarray(g, np.float64), adam_m[k], adam_v[k], t, LR, 0.9, 0.95, 1e-8, 0.1
      )
  for k, got in _matrices(final).items():
    worst = max(worst, np.abs(got - ws[k]).max())
    np.testing.assert_allclose(got, ws[k], atol=ATOL)
  for k, got in _adam_leaves(final).items():
    np.testing.assert_allclose(got, adam[k], atol=1e-6)
  print(f"max |jax - numpy| ({form}, nesterov={nesterov}): {worst:.2e}")


def test_code_form_preserves_frobenius_norm_of_o():
  """‖Ô‖_F = ‖O‖_F·√max(1, out/in) at every step (the row statistic only
  redistributes the norm); β = 0 and no Nesterov so O = NS5(G). Wide, tall,
  square and stacked leaves in one tree."""
  shapes = {"stacked_wide": (3, 6, 10), "tall": (10, 4), "square": (5, 5)}
  tx = scale_by_normuon(beta=0.0, nesterov=False, form="code")
  state = tx.init({k: jnp.zeros(s) for k, s in shapes.items()})
  update = jax.jit(tx.update)
  for step in range(4):
    keys = dict(zip(shapes, jax.random.split(jax.random.PRNGKey(step), len(shapes))))
    g = {k: jax.random.normal(keys[k], s) for k, s in shapes.items()}
    d, state = update(g, state)
    for k, shape in shapes.items():
      factor = max(1.0, shape[-1] / shape[-2]) ** 0.5
      g64 = np.asarray(g[k], np.float64).reshape((-1,) + shape[-2:])
      d64 = np.asarray(d[k], np.float64).reshape(g64.shape)
      for gi, di in zip(g64, d64):
        o = reference_newton_schulz(gi, [QUINTIC] * 5)
        np.testing.assert_allclose(np.linalg.norm(di), np.linalg.norm(o) * factor, rtol=1e-5)
        if step > 0:  # Not Muon's direction: the per-column statistic reshaped it.
          assert np.abs(di / factor - o).max() > 1e-3


def test_paper_form_rms_is_point_two_eta():
  """With λ = 0 each matrix's step is −η·Ô with RMS(Ô) = 0.2 exactly."""
  final, _, trace = run(_case_opt("paper", False, 0.0), zoo_params(), STEPS)
  after = [p for p, _ in trace[1:]] + [final]
  for (before, _), now in zip(trace, after):
    for k, w in _matrices(now).items():
      step = w - _matrices(before)[k]
      np.testing.assert_allclose(np.sqrt(np.mean(step**2)), 0.2 * LR, rtol=1e-4)


def test_errors_and_domains():
  with pytest.raises(ValueError, match="Unknown NorMuon form"):
    normuon(0.1, form="fast")
  with pytest.raises(ValueError, match="needs matrices"):
    scale_by_normuon().init({"b": jnp.zeros(3)})
  check_domains(normuon, normuon_module.DOMAINS)
  form = normuon_module.DOMAINS["form"]
  assert form.check("paper") and not form.check("fast")
  assert isinstance(normuon_module.IMPLICIT_BIAS_NOTE, str)


def test_inject_hyperparams():
  check_inject_hyperparams(_normuon, static_args=("ns_steps",))


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_multisteps_with_schedule():
  check_multisteps_with_schedule(_normuon)


def test_vmap_over_seeds():
  check_vmap_over_seeds(_normuon)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params():
  check_bf16_params(_normuon)
