"""Weight matching: a permuted network computes the same function, alignment
recovers the permutation, and the barrier it created goes back to zero."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from analysis import alignment, barriers, evaluate
from data.synthetic import make_task, squared_loss
from models.relu2 import make_model

WIDTH = 12


def _two_layer_with_output_bias(key, d=5, m=WIDTH, out=3):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  return {
    "hidden": {"kernel": jax.random.normal(k1, (d, m)), "bias": jax.random.normal(k2, (m,))},
    "output": {"kernel": jax.random.normal(k3, (m, out)), "bias": jax.random.normal(k4, (out,))},
  }


def _forward(p, x):
  h = jax.nn.relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
  return h @ p["output"]["kernel"] + p["output"]["bias"]


def _random_perm(seed, n=WIDTH):
  return {"hidden": np.random.default_rng(seed).permutation(n)}


def test_permuted_generic_two_layer_net_computes_the_same_function():
  params = _two_layer_with_output_bias(jax.random.PRNGKey(0))
  spec = alignment.two_layer_permutation_spec(
    ("hidden", "kernel"), ("hidden", "bias"), ("output", "kernel")
  )
  permuted = alignment.apply_permutation(spec, _random_perm(1), params)
  x = jax.random.normal(jax.random.PRNGKey(1), (20, 5))
  np.testing.assert_allclose(_forward(permuted, x), _forward(params, x), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(permuted["hidden"]["kernel"] - params["hidden"]["kernel"]).max()) > 0.1
  np.testing.assert_array_equal(permuted["output"]["bias"], params["output"]["bias"])


@pytest.mark.parametrize("use_bias", [True, False])
def test_relu2_spec_matches_the_real_model(use_bias):
  model = make_model(WIDTH, out_dim=2, use_bias=use_bias, bias_init_std=0.5)
  x = jax.random.normal(jax.random.PRNGKey(2), (16, 6))
  params = model.init(jax.random.PRNGKey(3), x)["params"]
  spec = alignment.relu2_permutation_spec(params)
  assert len(spec.axes_to_perm) == (3 if use_bias else 2)
  permuted = alignment.apply_permutation(spec, _random_perm(4), params)
  np.testing.assert_allclose(
    model.apply({"params": permuted}, x), model.apply({"params": params}, x), rtol=1e-5, atol=1e-6
  )
  # The variables dict {"params": ...} works too.
  spec_vars = alignment.relu2_permutation_spec({"params": params})
  assert all(name.startswith("params/") for name in spec_vars.axes_to_perm)


def test_weight_matching_recovers_the_inverse_permutation():
  params = _two_layer_with_output_bias(jax.random.PRNGKey(5))
  spec = alignment.two_layer_permutation_spec(output_kernel="output/kernel")
  perm = _random_perm(6)
  permuted = alignment.apply_permutation(spec, perm, params)
  aligned, found = alignment.align(spec, params, permuted)
  np.testing.assert_array_equal(found["hidden"], alignment.inverse_permutation(perm)["hidden"])
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), aligned, params)


def _fit_teacher(seed, steps=1500):
  """A width-12 relu2 fitted to a width-4 teacher (full batch, Adam)."""
  task = make_task("teacher", input_dim=6, n_train=128, n_test=0, teacher_width=4, seed=0)
  model = make_model(WIDTH, bias_init_std=0.1)
  x, y = jnp.asarray(task.x_train_NxD), jnp.asarray(task.y_train_NxO)
  loss = lambda p, batch: squared_loss(model.apply({"params": p}, batch[0]), batch[1])
  params = model.init(jax.random.PRNGKey(seed), x)["params"]
  opt = optax.adam(1e-2)

  def step(carry, _):
    p, state = carry
    grads = jax.grad(loss)(p, (x, y))
    updates, state = opt.update(grads, state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, steps))(params)
  return params, loss, (x, y)


def _barrier(loss, a, b, batch):
  ts = jnp.linspace(0, 1, 33)
  stack = lambda tree: jax.tree.map(lambda v: v[None], tree)
  losses = evaluate.evaluate_paths(loss, "linear", stack(a), stack(b), ts, batch)
  return float(barriers.loss_barrier(losses, ts, "linear").height[0]), float(losses[0, 0])


def test_permuted_copy_has_a_barrier_before_alignment_and_none_after():
  params, loss, batch = _fit_teacher(seed=0)
  spec = alignment.relu2_permutation_spec(params)
  permuted = alignment.apply_permutation(spec, _random_perm(7), params)
  before, endpoint_loss = _barrier(loss, params, permuted, batch)
  assert endpoint_loss < 0.01  # The fit worked: a near-zero-loss solution.
  assert before > 10 * endpoint_loss + 0.01, (before, endpoint_loss)
  aligned, _ = alignment.align(spec, params, permuted)
  after, _ = _barrier(loss, params, aligned, batch)
  assert abs(after) < 1e-6


def test_spec_errors():
  params = _two_layer_with_output_bias(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="not in params"):
    alignment.apply_permutation(
      alignment.two_layer_permutation_spec(output_kernel="head/kernel"), _random_perm(0), params
    )
  bad = alignment.permutation_spec_from_axes(
    {"hidden/kernel": (None, "p"), "output/kernel": ("p",)}
  )
  with pytest.raises(ValueError, match="axes for"):
    alignment.weight_matching(bad, params, params)
  mismatch = alignment.permutation_spec_from_axes({"hidden/kernel": ("p", "p")})
  with pytest.raises(ValueError, match="sizes"):
    alignment.weight_matching(mismatch, params, params)
  with pytest.raises(ValueError, match="Not relu2 params"):
    alignment.relu2_permutation_spec(params)
