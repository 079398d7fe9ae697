"""Freon: a NumPy transcription of the reconstructed rule, the sheet's facts (q = 1 is
the polar factor, σ ↦ σ^{q−1} decreasing for q < 1, the matmul-only method against
the SVD), the Lion-K identity with the Schatten K for q > 1, and the optax
compositions (jit, inject_hyperparams, MultiSteps, vmap over seeds, bf16)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optimizers import get_k, lion_k, polar_svd, registry
from optimizers.freon import (
  DOMAINS,
  IMPLICIT_BIAS_NOTE,
  freon,
  freon_map,
  lion_k_equivalent,
  newton_exponent,
  scale_by_freon,
)
from tests.zoo_wrappers import normal as _normal
from tests.zoo_wrappers import sin_grad as _grad
from tests.zoo_wrappers import sin_params as _params
from tests.zoo_wrappers import sin_run as _run
from tests.zoo_wrappers import sin_small_params as _small_params
from tests.zoo_wrappers import sin_stepper as _stepper

pytestmark = pytest.mark.usefixtures("compilation_cache")

# f32 against the f64 transcription over 6 steps (weights of size ~1; measured ~3e-7).
ATOL = 5e-6
# "newton" against "svd" on matrices with σ_max/σ_min ≲ 10 (max entry error / max entry).
NEWTON_RTOL = 1e-4


def reference_freon_map(x, q):
  """NumPy transcription of the reconstructed Freon direction (the zoo's sheet):
  U·Σ^{q−1}·Vᵀ / (mean σ^q)^{(q−1)/q} from the thin SVD (full-rank inputs)."""
  u, s, vt = np.linalg.svd(x, full_matrices=False)
  return (u * s ** (q - 1)) @ vt / np.mean(s**q) ** ((q - 1) / q)


def reference_freon_step(w, m, lr, q, beta, wd):
  """One Freon step (Nesterov) on a (fan_in, fan_out) matrix with the gradient of
  Σ sin(w)²: Muon's momentum and mix, the map, decoupled decay. Returns (w, m)."""
  g = np.sin(2 * w)
  m = beta * m + (1 - beta) * g
  return (1 - lr * wd) * w - lr * reference_freon_map(beta * m + (1 - beta) * g, q), m


@pytest.mark.parametrize("q", [2 / 3, 1.5])
def test_matches_numpy_reference_and_adamw_elsewhere(q):
  lr, beta, wd = 0.01, 0.9, 0.1
  params = _params()
  trace = _run(freon(lr, q=q, beta=beta, weight_decay=wd), params)
  worst = 0.0
  for get in [lambda t: t["dense"]["kernel"], lambda t: t["stack"]]:
    w = np.asarray(get(params), np.float64)
    m = np.zeros_like(w)
    for got in trace[1:]:
      # (L, m, n) is one matrix per leading index.
      flat = zip(w.reshape((-1,) + w.shape[-2:]), m.reshape((-1,) + w.shape[-2:]))
      pairs = [reference_freon_step(wi, mi, lr, q, beta, wd) for wi, mi in flat]
      w = np.stack([pair[0] for pair in pairs]).reshape(w.shape)
      m = np.stack([pair[1] for pair in pairs]).reshape(w.shape)
      worst = max(worst, np.abs(np.asarray(get(got), np.float64) - w).max())
  print(f"max |f32 - f64 reference| = {worst:.2e}")
  assert worst < ATOL, worst
  if q != 2 / 3:
    return  # The AdamW side is checked once.
  adam = _run(optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0), params)[-1]
  for leaf in [lambda t: t["dense"]["bias"], lambda t: t["wte"]["embedding"]]:
    np.testing.assert_allclose(leaf(trace[-1]), leaf(adam), atol=1e-6)


def _matrices(seed=0):
  """A wide and a stacked tall Gaussian matrix (σ_max/σ_min ≲ 10), f32."""
  shapes = [(8, 16), (2, 12, 8)]
  return [_normal(1000 * seed + i, shape) for i, shape in enumerate(shapes)]


def test_q_one_is_the_polar_factor_and_the_map_is_scale_free():
  @jax.jit
  def maps(xs):
    return [(freon_map(x, 1.0), polar_svd(x)) for x in xs], freon_map(1e3 * xs[0], 2 / 3)

  pairs, scaled = maps(_matrices())
  for ours, polar in pairs:
    np.testing.assert_allclose(ours, polar, atol=2e-6)
  x = np.asarray(_matrices()[0], np.float64)
  np.testing.assert_allclose(scaled, reference_freon_map(x, 2 / 3), atol=1e-5)


@pytest.mark.parametrize("q", [0.25, 2 / 3])
def test_singular_values_map_decreasing_below_q_one(q):
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.standard_normal((4, 4)))
  v, _ = np.linalg.qr(rng.standard_normal((9, 4)))
  s = np.array([4.0, 2.0, 1.0, 0.5])  # Full rank: the mean is over r = 4 values.
  out = np.asarray(jax.jit(freon_map, static_argnums=1)(jnp.asarray((u * s) @ v.T, jnp.float32), q))
  # O = U·diag(o)·Vᵀ with o_i ∝ s_i^{q−1}: increasing as s decreases.
  o = np.diag(u.T @ out @ v)
  np.testing.assert_allclose(u @ np.diag(o) @ v.T, out, atol=1e-5)
  assert np.all(np.diff(o) > 0)
  np.testing.assert_allclose(o, s ** (q - 1) / np.mean(s**q) ** ((q - 1) / q), rtol=1e-4)


def test_zero_singular_values_stay_zero_with_svd():
  rng = np.random.default_rng(1)
  g = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 10))  # rank 2.
  out = np.asarray(jax.jit(lambda x: freon_map(x, 0.5))(jnp.asarray(g, jnp.float32)))
  sv = np.linalg.svd(out, compute_uv=False)
  assert sv[2:].max() < 1e-5 and sv[1] > 0.1, sv
  for method in ("svd", "newton"):
    zero = jax.jit(lambda x: freon_map(x, 0.5, method))(jnp.zeros((3, 4)))
    np.testing.assert_array_equal(zero, 0.0)


def test_newton_agrees_with_svd():
  @jax.jit
  def both(wide, stacked_tall):
    qs = (2 / 3, 0.5, 1.0, 1.5, 2.0, 3.0)  # c = 2/3, 3/4, 1/2, 1/4, 0, −1/2.
    pairs = [(freon_map(stacked_tall, q, "svd"), freon_map(stacked_tall, q, "newton")) for q in qs]
    return [(freon_map(wide, 2 / 3, "svd"), freon_map(wide, 2 / 3, "newton"))] + pairs

  worst = max(
    float(jnp.abs(exact - newton).max() / jnp.abs(exact).max())
    for exact, newton in both(*_matrices(1))
  )
  print(f"max |newton - svd| / max |svd| = {worst:.2e}")
  assert worst < NEWTON_RTOL, worst
  assert newton_exponent(2 / 3) == (2, 3) and newton_exponent(1.0) == (1, 2)
  with pytest.raises(ValueError, match="nearest: q"):
    newton_exponent(0.123456)


@pytest.mark.parametrize("q", [1.0, 1.5, 3.0])
def test_q_at_least_one_is_lion_k_with_the_schatten_k(q):
  """Freon's direction is bound·∇K of `lion_k_equivalent`'s K, and its steps are
  Lion-K's (b1 = β², b2 = β) with η·bound and λ/bound."""
  beta, lr, wd = 0.9, 0.01, 0.2
  shape = (6, 10)
  k, options, bound = lion_k_equivalent(q, shape)
  assert (k, bound) == (("nuclear", 1.0) if q == 1 else ("schatten", 6 ** ((q - 1) / q)))
  options = {"method": "svd"} if k == "nuclear" else options  # Exact ∇K.
  x = _normal(1008, shape)
  ours, schatten = jax.jit(lambda x: (freon_map(x, q), get_k(k, **options).grad(x)))(x)
  np.testing.assert_allclose(ours, bound * schatten, rtol=1e-4, atol=1e-5)
  ours = optax.chain(scale_by_freon(q, beta), optax.add_decayed_weights(wd), optax.scale(-lr))
  twin = lion_k(lr * bound, k=k, b1=beta**2, b2=beta, weight_decay=wd / bound, **options)
  p1 = p2 = {"w": _normal(1007, shape)}
  s1, s2 = ours.init(p1), twin.init(p2)
  step1, step2 = jax.jit(ours.update), jax.jit(twin.update)
  for _ in range(4):
    u1, s1 = step1(_grad(p1), s1, p1)
    u2, s2 = step2(_grad(p2), s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  np.testing.assert_allclose(p1["w"], p2["w"], atol=1e-5)
  assert lion_k_equivalent(0.5, shape) is None


@pytest.mark.slow  # the wrapper checks: `pytest -m slow`
def test_inject_hyperparams_multisteps_and_schedule_under_jit():
  params = _small_params()
  # method="svd": q itself may be a traced hyperparameter.
  opt = optax.inject_hyperparams(freon)(learning_rate=0.02, weight_decay=0.1)
  state = opt.init(params)
  update = jax.jit(opt.update)
  g = _grad(params)
  u1, _ = update(g, state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.01, jnp.float32)
  u2, _ = update(g, state, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, 0.5 * a, rtol=1e-5, atol=1e-7), u1, u2)
  state.hyperparams["q"] = jnp.asarray(1.5, jnp.float32)
  u3, _ = update(g, state, params)
  # From zero momentum the mix is a multiple of g, and the map is scale-free.
  want = reference_freon_map(np.asarray(g["blocks"][0], np.float64), 1.5)
  w = np.asarray(params["blocks"][0], np.float64)
  np.testing.assert_allclose(u3["blocks"][0], -0.01 * (want + 0.1 * w), atol=1e-6)
  # method="newton" needs q static, and says so (tracing under jit is enough to tell).
  newton = optax.inject_hyperparams(freon, static_args=("q",))(0.02, method="newton")
  jax.jit(newton.update).lower(g, newton.init(params), params)
  traced = optax.inject_hyperparams(freon)(0.02, method="newton")
  with pytest.raises(ValueError, match="static_args"):
    jax.jit(traced.update).lower(g, traced.init(params), params)
  # MultiSteps of two equals one step on the mean gradient; a schedule runs.
  g2 = jax.tree.map(jnp.cos, params)
  multi = optax.MultiSteps(freon(optax.linear_schedule(0.02, 0.0, 10)), every_k_schedule=2)
  ms = multi.init(params)
  multi_update = jax.jit(multi.update)
  _, ms = multi_update(g, ms, params)
  u_multi, _ = multi_update(g2, ms, params)
  single = freon(optax.linear_schedule(0.02, 0.0, 10))
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g, g2)
  u_single, _ = jax.jit(single.update)(mean, single.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), u_multi, u_single)


def test_vmap_over_seeds_equals_separate_runs():
  opt = freon(0.01, weight_decay=0.1, method="newton")
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
  got = _run(freon(0.01, weight_decay=0.1, scale="shape"), p16, steps=4)[-1]
  p32 = jax.tree.map(lambda x: x.astype(jnp.float32), p16)
  want = _run(freon(0.01, weight_decay=0.1, scale="shape"), p32, steps=4)[-1]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.05)


def test_domains_cover_every_hyperparameter_and_errors():
  assert set(DOMAINS) == set(registry.keyword_names(freon))
  defaults = {
    "q": 2 / 3,
    "beta": 0.95,
    "nesterov": True,
    "method": "svd",
    "steps": 24,
    "eps": 1e-7,
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
  assert not DOMAINS["q"].check(0.0) and not DOMAINS["method"].check("qdwh")
  assert "Schatten" in IMPLICIT_BIAS_NOTE and "q < 1" in IMPLICIT_BIAS_NOTE
  with pytest.raises(ValueError, match="Unknown Freon method"):
    freon(0.1, method="qdwh")
  with pytest.raises(ValueError, match="q > 0"):
    freon(0.1, q=-1.0)
  with pytest.raises(ValueError, match="needs matrices"):
    freon(0.1, routing=lambda path, leaf: True).init({"v": jnp.zeros(3)})
