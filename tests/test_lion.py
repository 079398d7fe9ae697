"""Lion and Lion-K(ℓ1) against optax.lion, step for step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optimizers import lion, lion_k
from tests.references import reference_lion_k_step, reference_polar


def _random_problem(seed=0):
  """A least-squares fit of a mixed pytree (matrix, vector, 3-D) to random targets."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 6)
  params = {
    "w": jax.random.normal(keys[0], (6, 5)),
    "b": jax.random.normal(keys[1], (5,)),
    "t": jax.random.normal(keys[2], (2, 3, 4)),
  }
  x = jax.random.normal(keys[3], (32, 6))
  y = jax.random.normal(keys[4], (32, 5))
  t_target = jax.random.normal(keys[5], (2, 3, 4))

  def loss(p):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2) + jnp.mean(jnp.sin(p["t"]) - t_target) ** 2

  return params, loss


def _run(opt, params, loss, steps):
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    updates, state = opt.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  trajectory = []
  for _ in range(steps):
    params, state = step(params, state)
    trajectory.append(params)
  return trajectory


@pytest.mark.parametrize(
  "ours",
  [
    lambda lr, wd: lion(lr, b1=0.9, b2=0.99, weight_decay=wd),
    lambda lr, wd: lion_k(lr, k="l1", b1=0.9, b2=0.99, weight_decay=wd),
  ],
  ids=["lion", "lion_k_l1"],
)
def test_matches_optax_lion_for_100_steps(ours):
  params, loss = _random_problem()
  schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 10, 100)
  got = _run(ours(schedule, 0.1), params, loss, 100)
  want = _run(optax.lion(schedule, b1=0.9, b2=0.99, weight_decay=0.1), params, loss, 100)
  for step, (g, w) in enumerate(zip(got, want)):
    for name in g:
      np.testing.assert_allclose(
        g[name], w[name], rtol=0, atol=1e-7, err_msg=f"step {step}, leaf {name}"
      )
  assert loss(got[-1]) < loss(params)  # It did optimize.


def test_bf16_momentum_matches_optax():
  params, loss = _random_problem(1)
  got = _run(lion(1e-3, mu_dtype=jnp.bfloat16), params, loss, 20)
  want = _run(optax.lion(1e-3, weight_decay=0.0, mu_dtype=jnp.bfloat16), params, loss, 20)
  for name in got[-1]:
    np.testing.assert_allclose(got[-1][name], want[-1][name], rtol=0, atol=1e-7)
  assert lion(1e-3, mu_dtype=jnp.bfloat16).init(params)[0].mu["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
  "k,options,grad_k",
  [("l1", {}, np.sign), ("nuclear", {"method": "svd"}, reference_polar)],
  ids=["l1", "nuclear"],
)
def test_lion_k_matches_the_numpy_step(k, options, grad_k):
  """Lion-K against its NumPy transcription, fed the same gradients (checked on
  the matrix leaf; K acts on each leaf alone)."""
  params, loss = _random_problem(2)
  lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.5
  opt = lion_k(lr, k=k, b1=b1, b2=b2, weight_decay=wd, **options)
  state = opt.init(params)
  w, m = np.asarray(params["w"], np.float64), np.zeros(params["w"].shape)
  for _ in range(10):
    g = jax.grad(loss)(params)
    updates, state = opt.update(g, state, params)
    params = optax.apply_updates(params, updates)
    w, m = reference_lion_k_step(w, np.asarray(g["w"], np.float64), m, lr, b1, b2, wd, grad_k)
    np.testing.assert_allclose(params["w"], w, atol=1e-5)
