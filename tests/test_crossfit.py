"""Cross-fitted AdamW (optimizers/crossfit.py): every mode against a NumPy
transcription of ../shared/OPTIMIZERS.md, std against optax.adamw, the
delta-method bias reduction in a Monte Carlo test, the config refusals, the
shared wrapper checks, and the GPT-2 step feeding it the scan's microbatch
gradients."""

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import training
from configs import gpt2 as gpt2_config
from configs import relu2 as relu2_config
from models import gpt2
from optimizers import crossfit, microbatch
from tests import zoo_wrappers as zw
from training import config_checks, finite, gpt2_steps, tasks
from training import workdir as wd

B1, B2, EPS, LR, WD = 0.9, 0.99, 1e-8, 0.1, 0.05
# The leaves the leave-one-out mode treats as dense matrices (rank >= 2, not an embedding).
DENSE = ("dense/kernel", "stack")


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {
    "dense": {"kernel": rng.standard_normal((5, 7)), "bias": rng.standard_normal(7)},
    "stack": rng.standard_normal((2, 3, 4)),
    "wte": {"embedding": rng.standard_normal((9, 5))},
  }


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {prefix + k: v})
  return out


def _microbatch_grads(step, k):
  """K gradients per leaf: a shared signal plus noise, fresh each step."""
  rng = np.random.default_rng(100 + step)
  return {
    name: 0.3 * np.sign(p) + rng.standard_normal((k, *p.shape))
    for name, p in _flat(_tree()).items()
  }


def _np_leaf(p, m, v, t, g_K, mode, dense, jensen):
  """One step of one leaf, float64, straight from the rule in OPTIMIZERS.md."""
  k, g_bar = len(g_K), g_K.mean(0)
  bc1, bc2 = 1 - B1**t, 1 - B2**t
  if mode == "loo" and dense:
    d_K = np.stack(
      [np.sqrt((B2 * v + (1 - B2) * ((k * g_bar - g) / (k - 1)) ** 2) / bc2) + EPS for g in g_K]
    )
    m_hat_K = np.stack([(B1 * m + (1 - B1) * g) / bc1 for g in g_K])
    u1 = np.mean(m_hat_K / d_K, 0)
    u = u1 - np.var(d_K, 0, ddof=1) * np.mean(m_hat_K / d_K**3, 0) if jensen else u1
    u = np.where(u * u1 >= 0, u, 0.0)  # A coordinate whose sign flips is zeroed.
    m, v = B1 * m + (1 - B1) * g_bar, B2 * v + (1 - B2) * g_bar**2
  else:
    mode = "std" if mode == "loo" else mode
    cross = mode in ("cf", "full")
    g_A, g_B = (g_K[: k // 2], g_K[k // 2 :]) if cross else (g_K, g_K)
    g_m, s = (g_A.mean(0), (g_B**2).mean(0)) if cross else (g_bar, g_bar**2)
    var = 0.0
    if mode in ("inv", "full") and len(g_B) > 1:
      p_j = np.sqrt((B2 * v + (1 - B2) * g_B**2) / bc2)  # with v_{t−1}
      var = np.var(p_j, 0, ddof=1) / len(g_B)
    m, v = B1 * m + (1 - B1) * g_m, B2 * v + (1 - B2) * s
    d = np.sqrt(v / bc2) + EPS
    inv = np.maximum(1 / d - var / d**3, 0.0) if mode in ("inv", "full") else 1 / d
    u = m / bc1 * inv
  return p - LR * (u + WD * p), m, v, u


def _np_run(mode, steps, k, jensen=True):
  params = _flat(_tree())
  m = {n: np.zeros_like(p) for n, p in params.items()}
  v = {n: np.zeros_like(p) for n, p in params.items()}
  trace = []
  for t in range(1, steps + 1):
    g = _microbatch_grads(t, k)
    for n in params:
      params[n], m[n], v[n], _ = _np_leaf(params[n], m[n], v[n], t, g[n], mode, n in DENSE, jensen)
    trace.append(dict(params))
  return trace


def _unflat(flat):
  tree = {}
  for name, x in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(x, jnp.float32)
  return tree


def _jax_run(tx, steps, k):
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _tree())
  state, update = tx.init(params), jax.jit(tx.update)
  trace = []
  for t in range(1, steps + 1):
    g_K = _unflat(_microbatch_grads(t, k))
    g = jax.tree.map(lambda x: x.mean(0), g_K)
    u, state = update(g, state, params, microbatch_grads=g_K)
    params = optax.apply_updates(params, u)
    trace.append(_flat(params))
  return trace


@pytest.mark.parametrize(
  "mode,k,jensen",
  [("cf", 4, True), ("inv", 3, True), ("full", 4, True), ("loo", 4, True), ("loo", 3, False)],
)
def test_each_mode_matches_numpy(mode, k, jensen):
  # float32 against float64 over 4 steps at η = 0.1, relative to 1 + |θ − θ₀|: ~1e-7,
  # up to ~5e-6 where loo's m̂_r/d_r is large (a leave-one-out mean near 0, |Δθ| ~ 4).
  tx = crossfit.crossfit_adamw(LR, mode, B1, B2, EPS, jensen, weight_decay=WD)
  ours, ref = _jax_run(tx, 4, k), _np_run(mode, 4, k, jensen)
  start = _flat(_tree())
  diff = max(float(np.abs(a[n] - b[n]).max()) for a, b in zip(ours, ref) for n in a)
  rel = max(
    float((np.abs(a[n] - b[n]) / (1 + np.abs(b[n] - start[n]))).max())
    for a, b in zip(ours, ref)
    for n in a
  )
  print(f"crossfit {mode} K={k} jensen={jensen}: max |jax - numpy| {diff:.1e}, relative {rel:.1e}")
  assert rel < 2e-5
  moved = max(float(np.abs(ref[-1][n] - p).max()) for n, p in start.items())
  assert moved > 0.1  # Not vacuous.


def test_full_with_one_b_microbatch_is_cf():
  # K = 2: one B microbatch, no variance to correct with (and no NaN from K − 1 = 0).
  full, cf = (crossfit.crossfit_adamw(LR, m, B1, B2, weight_decay=WD) for m in ("full", "cf"))
  params = {"w": jnp.ones((3, 4))}

  @jax.jit
  def both(g_K):
    g = {"w": g_K["w"].mean(0)}
    return [tx.update(g, tx.init(params), params, microbatch_grads=g_K)[0] for tx in (full, cf)]

  u_full, u_cf = both({"w": jnp.asarray(_microbatch_grads(1, 2)["dense/kernel"][:, :3, :4])})
  np.testing.assert_array_equal(u_full["w"], u_cf["w"])
  assert np.all(np.isfinite(u_full["w"]))


def test_std_is_optax_adamw_exactly():
  ours = crossfit.crossfit_adamw(LR, "std", B1, B2, EPS, weight_decay=WD)
  ref = optax.adamw(LR, B1, B2, EPS, weight_decay=WD)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _tree())
  assert not microbatch.wants_microbatch_grads(ours.init(params))  # The plain scan, then.
  grads = [jax.tree.map(lambda x: x.mean(0), _unflat(_microbatch_grads(t, 2))) for t in (1, 2, 3)]

  @jax.jit
  def three_steps(params):
    out = []
    for tx in (ours, ref):
      p, state = params, tx.init(params)
      for g in grads:
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
      out.append(p)
    return out

  a, b = three_steps(params)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_delta_method_reduces_the_bias_of_the_inverse():
  # Step 1, g_A = 1 (so m̂ = 1 and u is the inverse estimate), g_B ~ N(μ, σ²) over
  # 4 B microbatches, 200k coordinates as replicates. d = √(mean_B g²) estimates
  # √E[g²] = √(μ² + σ²); E[1/d] > 1/√E[g²] (Jensen), and the corrected inverse
  # (full) removes most of that: bias 0.071 (cf) vs 0.021 (full), MC error 6e-4. To
  # leading order the plain bias is (3/8)·Var(ŝ)/s^{5/2} (ŝ = d², s = E ŝ) and the
  # correction Var(p̄)/d³ takes (1/4)·Var(ŝ)/s^{5/2} off: a third is left.
  mu, sigma, n = 1.0, 0.5, 200_000
  g_B = np.random.default_rng(0).normal(mu, sigma, (4, n))
  g_K = {"w": jnp.asarray(np.concatenate([np.ones((4, n)), g_B]), jnp.float32)}
  target = 1 / np.sqrt(mu**2 + sigma**2)
  params = {"w": jnp.zeros(n)}

  @jax.jit
  def inverse(g_K):
    g = {"w": g_K["w"].mean(0)}
    out = {}
    for mode in ("cf", "full"):
      tx = crossfit.scale_by_crossfit_adam(0.9, 0.999, 0.0, mode)
      out[mode] = tx.update(g, tx.init(params), params, microbatch_grads=g_K)[0]["w"]
    return out

  est = {mode: np.asarray(u, np.float64) for mode, u in inverse(g_K).items()}
  bias = {mode: e.mean() - target for mode, e in est.items()}
  se = est["cf"].std() / np.sqrt(n)
  print(f"crossfit MC: bias plain {bias['cf']:.4f}, corrected {bias['full']:.4f}, se {se:.1e}")
  assert bias["cf"] > 50 * se  # Jensen: the plain inverse is biased up.
  assert abs(bias["full"]) < 0.5 * bias["cf"]
  assert est["full"].min() >= 0  # The corrected inverse is never negative.


def _gpt2(variant, **optimizer):
  config = gpt2_config.get_config(f"runlocal,optimizer=crossfit_adamw,{variant}")
  with config.unlocked():
    config.optimizer.update(optimizer)
  return config


@pytest.mark.parametrize(
  "config,expected",
  [
    (lambda: relu2_config.get_config("runlocal,optimizer=crossfit_adamw"), "full-batch relu2"),
    (lambda: _gpt2("accum=2,nexus"), "full-batch relu2, or Nexus"),
    (lambda: _gpt2("accum=1", mode="inv"), "mode='inv' with grad_accum_steps=1"),
    (lambda: _gpt2("accum=3,batch=12", mode="cf"), "an even grad_accum_steps"),
    (lambda: _gpt2("accum=3,batch=12", mode="full"), "an even grad_accum_steps"),
  ],
)
def test_config_checks_refuse_what_cannot_feed_it(config, expected):
  with pytest.raises(training.ConfigError) as info:
    config_checks.validate_config(config())
  assert expected in str(info.value) and "\n" not in str(info.value)


def test_config_checks_accept_odd_accum_for_inv_and_std_anywhere():
  config_checks.validate_config(_gpt2("accum=3,batch=12", mode="inv"))
  config_checks.validate_config(_gpt2("accum=1", mode="std"))
  relu2 = relu2_config.get_config("runlocal,optimizer=crossfit_adamw")
  with relu2.unlocked():
    relu2.optimizer.mode = "std"
  config_checks.validate_config(relu2)


X_KxNxD = np.random.default_rng(1).standard_normal((2, 8, 4)).astype(np.float32)


def _mb_loss(p, x_NxD):
  """tests/zoo_wrappers.small_loss on one microbatch of fixed inputs."""
  p = jax.tree.map(lambda a: a.astype(jnp.float32), p)
  h = jnp.tanh(x_NxD @ p["blocks"][0] + p["bias"])
  return jnp.mean((h @ p["blocks"][1].T - 1.0) ** 2)


@functools.lru_cache(maxsize=8)
def _mb_stepper(tx):
  @jax.jit
  def step(p, s):
    g_K = jax.vmap(jax.grad(_mb_loss), (None, 0))(p, X_KxNxD)
    u, s = tx.update(jax.tree.map(lambda g: g.mean(0), g_K), s, p, microbatch_grads=g_K)
    return optax.apply_updates(p, u), s

  return step


def _mb_run(tx, params, steps):
  """``steps`` jitted steps on 2 microbatch gradients of the wrappers' small loss."""
  step, state = _mb_stepper(tx), tx.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def test_wrappers_jit_inject_vmap_bf16():
  # The zoo's wrapper checks (tests/zoo_wrappers.py) with microbatch gradients;
  # MultiSteps does not apply (its last mini-step alone would pass microbatch_grads).
  kw = dict(mode="inv", weight_decay=0.1)
  tx = crossfit.crossfit_adamw(0.02, **kw)
  plain, _ = _mb_run(tx, zw.sin_small_params(), 3)
  inject = optax.inject_hyperparams(crossfit.crossfit_adamw, static_args=("mode", "routing"))
  injected, state = _mb_run(inject(0.02, **kw), zw.sin_small_params(), 3)
  zw.assert_trees_close(injected, plain, atol=1e-6)
  np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.02)
  # A leading seed axis on params and state (vmap) equals each seed alone.
  params_S = jax.tree.map(lambda *p: jnp.stack(p), zw.sin_small_params(0), zw.sin_small_params(1))
  vmapped, _ = jax.jit(jax.vmap(lambda p: _mb_run(tx, p, 3)))(params_S)
  alone, _ = _mb_run(tx, zw.sin_small_params(1), 3)
  zw.assert_trees_close(jax.tree.map(lambda p: p[1], vmapped), alone, atol=1e-5)
  low, _ = _mb_run(tx, zw.sin_small_params(dtype=jnp.bfloat16), 3)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(low))
  zw.assert_trees_close(jax.tree.map(lambda p: p.astype(jnp.float32), low), plain, atol=0.05)
  zw.check_domains(crossfit.crossfit_adamw, crossfit.DOMAINS)


class _Bigram:
  """A stand-in for models.gpt2.GPT2 that gpt2.loss_fn can apply (a second to
  compile, where the GPT-2 step takes ten on a loaded CPU)."""

  config = types.SimpleNamespace(dropout=0.0)

  def apply(self, variables, x_BxT, deterministic=True, rngs=None):
    p = variables["params"]
    h_BxTxD = jnp.tanh(p["wte"]["embedding"][x_BxT] @ p["h"]["kernel"])
    return h_BxTxD @ p["wte"]["embedding"].T


def _model_and_shapes(name):
  if name == "bigram":
    shape = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    return _Bigram(), {"wte": {"embedding": shape(32, 8)}, "h": {"kernel": shape(8, 8)}}, 32
  model = tasks.gpt2_model(_gpt2("accum=2"), 256, dropout=0.0)
  model = gpt2.GPT2(dataclasses.replace(model.config, n_layer=1))  # runlocal's, one block
  return model, jax.eval_shape(lambda: gpt2.init_params(model, jax.random.PRNGKey(0), 16)), 256


@pytest.mark.parametrize("name", ["bigram", pytest.param("gpt2", marks=pytest.mark.slow)])
def test_gpt2_step_feeds_the_scans_microbatch_grads(name):
  # make_steps with accum=2 equals tx.update with hand-stacked microbatch gradients;
  # the same update with both set to their mean differs (not vacuous). ε = 1e-3 keeps
  # loo's first-step ratios g_r/|g_−r| away from tiny-gradient rounding.
  model, shapes, vocab = _model_and_shapes(name)
  tx = crossfit.crossfit_adamw(1e-2, "loo", eps=1e-3)
  train_step, _, batched = gpt2_steps.make_steps(model, tx, gpt2_steps.make_data_mesh(), 2)
  rng = np.random.default_rng(0)  # Random params (flax's init would compile for seconds).
  params = jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), shapes)
  tokens = rng.integers(0, vocab, (2, 2, 17), np.int32)
  x_AxBxT, y_AxBxT = tokens[..., :-1], tokens[..., 1:]

  @jax.jit
  def by_hand(p):
    g_A = jax.vmap(lambda x, y: jax.grad(gpt2.loss_fn)(p, model, x, y))(x_AxBxT, y_AxBxT)
    g = jax.tree.map(lambda x: x.mean(0), g_A)
    u = tx.update(g, tx.init(p), p, microbatch_grads=g_A)[0]
    mean_A = jax.tree.map(lambda x: jnp.stack([x, x]), g)
    return optax.apply_updates(p, u), tx.update(g, tx.init(p), p, microbatch_grads=mean_A)[0], u

  want, u_mean, u = by_hand(params)
  state = {
    "step": jnp.int32(0),
    "params": jax.tree.map(jnp.copy, params),
    "opt_state": tx.init(params),
    "rng": jax.random.PRNGKey(1),
    "first_nonfinite_step": jnp.int32(-1),
  }
  batch = [jax.device_put(a, batched) for a in (x_AxBxT, y_AxBxT)]
  state, _, _ = train_step(state, finite.empty_record(params), *batch)
  zw.assert_trees_close(state["params"], want, atol=1e-6, rtol=1e-5)
  gap = max(
    float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u_mean))
  )
  assert gap > 1e-4


@pytest.mark.slow  # ~30 s: the trainer end to end
def test_trains_tiny_gpt2_through_the_trainer(tmp_path):
  config = _gpt2("accum=4,steps=20", mode="full")  # 2 B microbatches: corrected
  with config.unlocked():
    config.log_every = 5
  summary = training.run(config, tmp_path)
  rows = wd.read_metrics(tmp_path)
  assert rows[-1]["train_loss"] < rows[0]["train_loss"], (rows[0], rows[-1])
  assert summary["final_val_loss_mean"] < np.log(summary["vocab_size"]) - 1.0, summary
