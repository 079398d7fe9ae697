"""Kaon: a NumPy transcription of the reconstructed rule, the sheet's facts (‖O‖₂ < 1,
zero singular values kept, orthogonal equivariance, the map on singular values),
and the optax compositions (jit, inject_hyperparams, MultiSteps, vmap, bf16)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optimizers import registry
from optimizers.kaon import DOMAINS, IMPLICIT_BIAS_NOTE, kaon, kaon_map
from tests.zoo_wrappers import sin_grad as _grad
from tests.zoo_wrappers import sin_params as _params
from tests.zoo_wrappers import sin_run as _run
from tests.zoo_wrappers import sin_small_params as _small_params
from tests.zoo_wrappers import sin_stepper as _stepper

pytestmark = pytest.mark.usefixtures("compilation_cache")

# f32 against the f64 transcription over a few steps (weights of size ~1). The map
# amplifies rounding by up to f'(0)^5 = 4.1^5 ≈ 1.2e3 (the map is chaotic), so the
# tolerance is 5e-5, not the 1e-6 of a contraction.
ATOL = 5e-5


def reference_kaon_map(x, steps=5, gain=4.1, divisor=1.175):
  """NumPy transcription of the reconstructed Kaon map (the zoo's sheet): X₀ = x/‖x‖_F
  on the wide orientation, X ← gain·(I − XXᵀ)²X ``steps`` times, then X/divisor."""
  tall = x.shape[0] > x.shape[1]
  x = x.T if tall else x
  x = x / (np.linalg.norm(x) + 1e-7)
  for _ in range(steps):
    b = np.eye(len(x)) - x @ x.T
    x = gain * b @ b @ x
  x = x / divisor
  return x.T if tall else x


def reference_kaon_step(w, m, lr, beta, wd, nesterov):
  """One Kaon step on a (fan_in, fan_out) matrix with the gradient of Σ sin(w)²:
  Muon's momentum (and Nesterov mix), the map, decoupled decay. Returns (w, m)."""
  g = np.sin(2 * w)
  m = beta * m + (1 - beta) * g
  u = beta * m + (1 - beta) * g if nesterov else m
  return (1 - lr * wd) * w - lr * reference_kaon_map(u), m


@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_numpy_reference_and_adamw_elsewhere(nesterov):
  lr, beta, wd = 0.02, 0.9, 0.1
  params = _params()
  trace = _run(kaon(lr, beta=beta, nesterov=nesterov, weight_decay=wd), params)
  worst = 0.0
  for get in [lambda t: t["dense"]["kernel"], lambda t: t["stack"]]:
    w = np.asarray(get(params), np.float64)
    m = np.zeros_like(w)
    for got in trace[1:]:
      # (L, m, n) is one matrix per leading index.
      flat = zip(w.reshape((-1,) + w.shape[-2:]), m.reshape((-1,) + w.shape[-2:]))
      pairs = [reference_kaon_step(wi, mi, lr, beta, wd, nesterov) for wi, mi in flat]
      w = np.stack([pair[0] for pair in pairs]).reshape(w.shape)
      m = np.stack([pair[1] for pair in pairs]).reshape(w.shape)
      worst = max(worst, np.abs(np.asarray(get(got), np.float64) - w).max())
  print(f"max |f32 - f64 reference| = {worst:.2e}")
  assert worst < ATOL, worst
  if not nesterov:
    return  # The AdamW side is checked once.
  adam = _run(optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0), params)[-1]
  for leaf in [lambda t: t["dense"]["bias"], lambda t: t["wte"]["embedding"]]:
    np.testing.assert_allclose(leaf(trace[-1]), leaf(adam), atol=1e-6)


def _scalar_map(s, steps=5, gain=4.1):
  for _ in range(steps):
    s = gain * s * (1 - s**2) ** 2
  return s


def test_the_map_on_singular_values_and_its_bound_below_one():
  # The scalar facts: max of 4.1·s(1 − s²)² on [0, 1] is 4.1·(16/25)/√5 at s = 1/√5,
  # below the divisor 1.175, and [0, that max] maps into itself.
  top = 4.1 * (16 / 25) / np.sqrt(5)
  assert top == pytest.approx(1.1735, abs=1e-4) and top < 1.175
  grid = np.linspace(0, top, 200001)
  assert _scalar_map(grid, steps=1).max() == pytest.approx(top, rel=1e-9)
  # The matrix map keeps U and V and sends σ/‖σ‖₂ through the scalar map 5 times.
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.standard_normal((7, 4)))
  v, _ = np.linalg.qr(rng.standard_normal((9, 4)))
  # σ₀ = 1/√5 after normalization hits the maximum at the first step.
  s = np.array([1 / np.sqrt(5), 0.6, 0.5, np.sqrt(1 - 0.2 - 0.36 - 0.25)])
  g = (u * s) @ v.T
  xs = jnp.asarray(np.stack([g, g * 1e3, rng.standard_normal((7, 9))]), jnp.float32)
  out = np.asarray(jax.jit(kaon_map)(xs), np.float64)
  np.testing.assert_allclose(out[0], (u * _scalar_map(s) / 1.175) @ v.T, atol=ATOL)
  np.testing.assert_allclose(out[1], out[0], atol=ATOL)  # Scale-free.
  for o in out:
    assert np.linalg.norm(o, 2) < 1


def test_zero_singular_values_stay_zero():
  rng = np.random.default_rng(1)
  a, b = rng.standard_normal((6, 2)), rng.standard_normal((2, 10))
  g = a @ b  # rank 2.
  out = np.asarray(jax.jit(kaon_map)(jnp.asarray(g, jnp.float32)), np.float64)
  sv = np.linalg.svd(out, compute_uv=False)
  # Zero in exact arithmetic; f32 rounding (1e-7) grows by at most 4.1^5 ≈ 1.2e3.
  assert sv[2:].max() < 2e-4 and sv[1] > 0.05, sv
  # Its row and column spaces are g's: O = P_col·O·P_row.
  p_col, p_row = a @ np.linalg.pinv(a), np.linalg.pinv(b) @ b
  np.testing.assert_allclose(p_col @ out @ p_row, out, atol=2e-4)
  np.testing.assert_allclose(jax.jit(kaon_map)(jnp.zeros((3, 4))), 0.0)


def test_orthogonally_equivariant_and_transpose_equivariant():
  rng = np.random.default_rng(2)
  g = rng.standard_normal((6, 9))
  p, _ = np.linalg.qr(rng.standard_normal((6, 6)))
  q, _ = np.linalg.qr(rng.standard_normal((9, 9)))
  f = jax.jit(kaon_map)
  as_f32 = lambda x: jnp.asarray(x, jnp.float32)
  np.testing.assert_allclose(f(as_f32(p @ g @ q)), p @ np.asarray(f(as_f32(g))) @ q, atol=ATOL)
  np.testing.assert_allclose(f(as_f32(g.T)), np.asarray(f(as_f32(g))).T, atol=ATOL)
  np.testing.assert_allclose(f(as_f32(g)), reference_kaon_map(g), atol=ATOL)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_inject_hyperparams_multisteps_and_schedule_under_jit():
  params = _small_params()
  # steps is traced here (a fori_loop), so no static_args are needed.
  opt = optax.inject_hyperparams(kaon)(learning_rate=0.02, weight_decay=0.1)
  state = opt.init(params)
  update = jax.jit(opt.update)
  g = _grad(params)
  u1, _ = update(g, state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.01, jnp.float32)
  u2, _ = update(g, state, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, 0.5 * a, rtol=1e-5, atol=1e-7), u1, u2)
  state.hyperparams["steps"] = jnp.asarray(3)  # weak int32, as inject_hyperparams made it
  u3, _ = update(g, state, params)
  # From zero momentum the mix is a multiple of g, and the map is scale-free.
  want = reference_kaon_map(np.asarray(g["blocks"][0], np.float64), steps=3)
  w = np.asarray(params["blocks"][0], np.float64)
  np.testing.assert_allclose(u3["blocks"][0], -0.01 * (want + 0.1 * w), atol=1e-6)
  # MultiSteps of two equals one step on the mean gradient; a schedule runs.
  g2 = jax.tree.map(jnp.cos, params)
  multi = optax.MultiSteps(kaon(optax.linear_schedule(0.02, 0.0, 10)), every_k_schedule=2)
  ms = multi.init(params)
  multi_update = jax.jit(multi.update)
  _, ms = multi_update(g, ms, params)
  u_multi, _ = multi_update(g2, ms, params)
  single = kaon(optax.linear_schedule(0.02, 0.0, 10))
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g, g2)
  u_single, _ = jax.jit(single.update)(mean, single.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), u_multi, u_single)


def test_vmap_over_seeds_equals_separate_runs():
  opt = kaon(0.02, weight_decay=0.1)
  seeds = [_small_params(s) for s in range(3)]
  params_S = jax.tree.map(lambda *xs: jnp.stack(xs), *seeds)

  @jax.jit
  def step_S(params_S, state_S):
    u_S, state_S = jax.vmap(opt.update)(jax.vmap(_grad)(params_S), state_S, params_S)
    return optax.apply_updates(params_S, u_S), state_S

  state_S = jax.vmap(opt.init)(params_S)
  for _ in range(3):
    params_S, state_S = step_S(params_S, state_S)
  step = _stepper(opt)
  for s, p in enumerate(seeds):
    alone = _run(opt, p, steps=3, step=step)[-1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[s], b, atol=1e-5), params_S, alone)


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_bf16_params_stay_bf16_and_match_f32_loosely():
  p16 = _small_params(dtype=jnp.bfloat16)
  got = _run(kaon(0.02, weight_decay=0.1, scale="shape"), p16, steps=4)[-1]
  p32 = jax.tree.map(lambda x: x.astype(jnp.float32), p16)
  want = _run(kaon(0.02, weight_decay=0.1, scale="shape"), p32, steps=4)[-1]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.05)


def test_domains_cover_every_hyperparameter_and_errors():
  assert set(DOMAINS) == set(registry.keyword_names(kaon))
  defaults = {
    "beta": 0.95,
    "nesterov": True,
    "steps": 5,
    "gain": 4.1,
    "divisor": 1.175,
    "scale": "none",
    "mu_dtype": None,
    "adam_learning_rate": None,
    "adam_b1": 0.9,
    "adam_b2": 0.95,
    "adam_eps": 1e-8,
    "adam_weight_decay": 0.0,
    "routing": None,
  }
  for key, value in defaults.items():
    assert DOMAINS[key].check(value), key
  assert not DOMAINS["steps"].check(0) and not DOMAINS["gain"].check(-1.0)
  assert "None known" in IMPLICIT_BIAS_NOTE
  with pytest.raises(ValueError, match="Unknown Muon scale"):
    kaon(0.1, scale="big")
  with pytest.raises(ValueError, match="needs matrices"):
    kaon(0.1, routing=lambda path, leaf: True).init({"v": jnp.zeros(3)})
