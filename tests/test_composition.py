"""The optimizers compose like any optax transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optimizers import lion, lion_k, muon


def _params(dtype=jnp.float32):
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  return {
    "vec": jax.random.normal(k[0], (7,), dtype),
    "mat": jax.random.normal(k[1], (5, 9), dtype),
    "stack": jax.random.normal(k[2], (3, 4, 6), dtype),
  }


def _loss(p):
  return sum(jnp.sum(jnp.sin(x.astype(jnp.float32)) ** 2) for x in jax.tree.leaves(p))


OPTIMIZERS = {
  "lion": lambda lr: lion(lr, weight_decay=0.1),
  "lion_k_nuclear": lambda lr: lion_k(lr, k="nuclear", weight_decay=0.1),
  "lion_k_schatten": lambda lr: lion_k(lr, k="schatten", p=3.0),
  "muon": lambda lr: muon(lr, weight_decay=0.1),
  "muon_svd_bf16": lambda lr: muon(lr, method="svd", mu_dtype=jnp.bfloat16),
}


def _run(opt, params, steps=5):
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    u, state = opt.update(jax.grad(_loss)(params), state, params)
    return optax.apply_updates(params, u), state

  for _ in range(steps):
    params, state = step(params, state)
  return params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_chain_with_clipping_and_a_schedule_under_jit(name):
  opt = optax.chain(
    optax.clip_by_global_norm(1.0), OPTIMIZERS[name](optax.linear_schedule(0.05, 0.0, 20))
  )
  params = _params()
  new, _ = _run(opt, params, steps=20)
  assert _loss(new) < _loss(params)
  assert jax.tree.map(lambda a: a.shape, new) == jax.tree.map(lambda a: a.shape, params)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_bf16_parameters_stay_bf16_and_finite(name):
  params = _params(jnp.bfloat16)
  new, _ = _run(OPTIMIZERS[name](0.01), params)
  for leaf in jax.tree.leaves(new):
    assert leaf.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(leaf, np.float32)).all()


@pytest.mark.parametrize("factory,kwargs", [(lion, {}), (lion_k, {"k": "l2"}), (muon, {})])
def test_inject_hyperparams_learning_rate_is_live(factory, kwargs):
  opt = optax.inject_hyperparams(factory)(learning_rate=0.1, **kwargs)
  params = _params()
  state = opt.init(params)
  g = jax.grad(_loss)(params)
  u1, _ = opt.update(g, state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.05)
  u2, _ = opt.update(g, state, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, 0.5 * a, rtol=1e-5, atol=1e-7), u1, u2)


@pytest.mark.parametrize("name", ["lion", "muon"])
def test_multisteps_equals_one_step_on_the_mean_gradient(name):
  params = _params()
  g1 = jax.tree.map(lambda x: jnp.cos(x), params)
  g2 = jax.tree.map(lambda x: jnp.sin(3 * x), params)
  multi = optax.MultiSteps(OPTIMIZERS[name](0.01), every_k_schedule=2)
  state = multi.init(params)
  u_first, state = multi.update(g1, state, params)
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(u_first))
  u_multi, _ = multi.update(g2, state, params)
  single = OPTIMIZERS[name](0.01)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  u_single, _ = single.update(mean, single.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), u_multi, u_single)
