"""Shared by the optimizer-zoo tests (NorMuon, SF-NorMuon, MiMuon, Dion): a
tree with a wide, a tall and a stacked matrix plus AdamW leaves, a loss that
touches every leaf, and the wrapper checks every optimizer must pass (on a
smaller tree): jit,
optax.inject_hyperparams, optax.MultiSteps with a schedule, jax.vmap over a
leading seed axis of params and state, and bf16 params."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax


def zoo_params(seed=0, dtype=jnp.float32):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  params = {
    "dense_in": {"kernel": jax.random.normal(k[0], (6, 10)) * 0.5, "bias": jnp.zeros(10)},
    "dense_out": {"kernel": jax.random.normal(k[1], (10, 4)) * 0.3},
    "stack": jax.random.normal(k[2], (2, 4, 4)) * 0.5,
    "wte": {"embedding": jax.random.normal(k[3], (12, 6)) * 0.1},
  }
  return jax.tree.map(lambda p: p.astype(dtype), params)


def small_params(seed=0, dtype=jnp.float32):
  """The wrapper checks' tree: one stacked (2, 4, 6) matrix leaf and a bias
  (half the compile time of `zoo_params`, and the wrappers do not care)."""
  k = jax.random.split(jax.random.PRNGKey(seed), 2)
  params = {"blocks": jax.random.normal(k[0], (2, 4, 6)) * 0.5, "bias": jnp.zeros(6)}
  return jax.tree.map(lambda p: p.astype(dtype), params)


def small_loss(p, seed=1):
  p = jax.tree.map(lambda a: a.astype(jnp.float32), p)
  x = jax.random.normal(jax.random.PRNGKey(seed), (8, 4))
  h = jnp.tanh(x @ p["blocks"][0] + p["bias"])
  return jnp.mean((h @ p["blocks"][1].T - 1.0) ** 2)


def zoo_loss(p, seed=1):
  """Depends on every leaf, so every leaf gets a gradient; f32 math for bf16 params."""
  p = jax.tree.map(lambda a: a.astype(jnp.float32), p)
  x = jax.random.normal(jax.random.PRNGKey(seed), (16, 6)) + p["wte"]["embedding"][:4].sum(0)
  h = jnp.tanh(x @ p["dense_in"]["kernel"] + p["dense_in"]["bias"])
  y = h @ p["dense_out"]["kernel"] @ p["stack"][0] @ p["stack"][1]
  return jnp.mean((y - 1.0) ** 2)


@functools.lru_cache(maxsize=32)
def _stepper(opt, loss):
  """One jitted step (gradient, update, apply) per optimizer: one compile per
  optimizer and shape, shared by every run of it (CPU compiles dominate)."""

  @jax.jit
  def step(params, state):
    g = jax.grad(loss)(params)
    u, state = opt.update(g, state, params)
    return optax.apply_updates(params, u), state, g

  return jax.jit(opt.init), step


def init_state(opt, params, loss=zoo_loss):
  """``opt.init(params)`` by the jitted init `run` uses."""
  return _stepper(opt, loss)[0](params)


def run(opt, params, steps, loss=zoo_loss):
  """(final params, final state, [(params, grads) at each step]) of ``steps`` jitted steps."""
  init, step = _stepper(opt, loss)
  state = init(params)
  trace = []
  for _ in range(steps):
    new_params, state, g = step(params, state)
    trace.append((params, g))
    params = new_params
  return params, state, trace


def run_with_states(opt, params, steps, loss=zoo_loss):
  """[(params, state)] after each of ``steps`` jitted steps."""
  init, step = _stepper(opt, loss)
  state = init(params)
  out = []
  for _ in range(steps):
    params, state, _ = step(params, state)
    out.append((params, state))
  return out


def cached(factory):
  """``factory`` memoized on its (hashable) arguments: equal calls return the
  same optimizer, so `run` reuses its compiled step. The checks below call the
  factory with (0.02, **kwargs), so with one cached factory they share one
  compiled f32 step."""
  return functools.lru_cache(maxsize=None)(factory)


def assert_trees_close(a, b, atol, rtol=0.0):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=rtol), a, b)


def check_inject_hyperparams(factory, static_args=(), steps=3, **kwargs):
  """inject_hyperparams gives the same steps, and its learning rate is live state."""
  plain, _, _ = run(factory(0.02, **kwargs), small_params(), steps, small_loss)
  raw = getattr(factory, "__wrapped__", factory)  # inject passes arrays: not hashable.
  injected_opt = optax.inject_hyperparams(raw, static_args=static_args)(0.02, **kwargs)
  injected, state, _ = run(injected_opt, small_params(), steps, small_loss)
  assert_trees_close(injected, plain, atol=1e-6)
  np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.02)
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)  # η = 0: nothing moves.
  frozen, _, _ = _stepper(injected_opt, small_loss)[1](injected, state)
  frozen = jax.tree.map(lambda a, b: a - b, frozen, injected)
  # With η = 0 no iterate moves (SF-NorMuon: z stays, c = 0 keeps x, so y stays).
  for u in jax.tree.leaves(frozen):
    np.testing.assert_allclose(u, 0.0, atol=1e-6)


def check_multisteps_with_schedule(factory, **kwargs):
  """optax.MultiSteps(k=2) with a schedule: two mini-steps equal one step on the
  mean gradient."""
  schedule = optax.linear_schedule(0.02, 0.002, 10)
  params = small_params()
  g1 = jax.grad(small_loss)(params)
  g2 = jax.grad(lambda p: small_loss(p, seed=2))(params)
  multi = optax.MultiSteps(factory(schedule, **kwargs), every_k_schedule=2)
  state = multi.init(params)
  update = jax.jit(multi.update)
  u1, state = update(g1, state, params)
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(u1))
  u2, _ = update(g2, state, params)
  single = factory(schedule, **kwargs)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  want, _ = jax.jit(single.update)(mean, single.init(params), params)
  assert_trees_close(u2, want, atol=1e-6)


def check_vmap_over_seeds(factory, steps=3, atol=1e-5, **kwargs):
  """A leading seed axis on params and state (the relu2 trainer's layout): the
  vmapped steps equal each seed's own run."""
  opt = factory(0.02, **kwargs)
  seeds = (0, 1)
  params_S = jax.tree.map(lambda *p: jnp.stack(p), *[small_params(s) for s in seeds])
  state_S = jax.vmap(opt.init)(params_S)

  def step(p, s):
    u, s = opt.update(jax.grad(small_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  step_S = jax.jit(jax.vmap(step))
  for _ in range(steps):
    params_S, state_S = step_S(params_S, state_S)
  for i, s in enumerate(seeds):
    alone, _, _ = run(opt, small_params(s), steps, small_loss)
    assert_trees_close(jax.tree.map(lambda p: p[i], params_S), alone, atol=atol)
  return params_S, state_S


def check_bf16_params(factory, steps=3, atol=0.05, **kwargs):
  """bf16 params run: the leaves stay bf16, finite, and near the f32 run."""
  opt = factory(0.02, **kwargs)
  low, _, _ = run(opt, small_params(dtype=jnp.bfloat16), steps, small_loss)
  full, _, _ = run(opt, small_params(), steps, small_loss)
  for p in jax.tree.leaves(low):
    assert p.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(p)))
  assert_trees_close(jax.tree.map(lambda p: p.astype(jnp.float32), low), full, atol=atol)


def check_domains(alias, domains):
  """DOMAINS covers every keyword hyperparameter of the alias (all but
  learning_rate, weight_decay, mask) and accepts each default."""
  params = inspect.signature(alias).parameters
  hyper = set(params) - {"learning_rate", "weight_decay", "mask"}
  assert hyper <= set(domains), hyper - set(domains)
  for name in hyper:
    assert domains[name].check(params[name].default), (name, params[name].default)


# The PolarGrad, Kaon and Freon tests' problem: per-leaf f = Σ sin(θ)², whose
# gradient NumPy takes the same way.


def normal(seed, shape, dtype=jnp.float32):
  """Gaussian test data from NumPy (eager jax.random compiles a kernel per shape: slow on CPU)."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def sin_params(seed=0, dtype=jnp.float32):
  return {
    "dense": {"kernel": normal(3 * seed, (6, 10), dtype), "bias": jnp.zeros(10, dtype)},
    "stack": normal(3 * seed + 1, (2, 5, 3), dtype),
    "wte": {"embedding": normal(3 * seed + 2, (12, 6), dtype)},
  }


def sin_small_params(seed=0, dtype=jnp.float32):
  """The composition checks' tree: one stacked matrix and a bias (half the compile time)."""
  return {
    "blocks": normal(100 + 2 * seed, (2, 4, 6), dtype),
    "bias": normal(101 + 2 * seed, (6,), dtype),
  }


def sin_grad(p):
  """∇ of Σ_leaves Σ sin(θ)²: per leaf, so NumPy can take the same gradient."""
  return jax.tree.map(lambda x: jnp.sin(2 * x), p)


def sin_stepper(opt):
  @jax.jit
  def step(params, state):
    u, state = opt.update(sin_grad(params), state, params)
    return optax.apply_updates(params, u), state

  return step


def sin_run(opt, params, steps=6, step=None):
  """[params_0, ..., params_steps] of ``opt`` on the gradient `sin_grad`."""
  step = step or sin_stepper(opt)
  state = opt.init(params)
  trace = [params]
  for _ in range(steps):
    params, state = step(params, state)
    trace.append(params)
  return trace
