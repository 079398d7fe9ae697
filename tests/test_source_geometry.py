"""Gradient similarity and source-minima closeness on quadratic sources with
closed-form answers."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from analysis.source_geometry import (
  cosine_matrix,
  finetune_per_source,
  gradient_similarity,
  source_minima,
)

# Source s: L_s(θ) = ½‖θ − c_s‖², θ a pytree {"w": (2,), "v": (1,)}; the batch is c_s.
CENTERS_KX3 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 3.0]], np.float32)


def loss_fn(params, center):
  theta = jnp.concatenate([params["w"], params["v"]])
  return 0.5 * jnp.sum((theta - center) ** 2)


def _params(theta):
  return {"w": jnp.asarray(theta[:2], jnp.float32), "v": jnp.asarray(theta[2:], jnp.float32)}


def test_gradient_similarity_is_the_cosine_of_theta_minus_centers():
  theta = np.array([0.5, -1.0, 2.0], np.float32)
  out = gradient_similarity(loss_fn, _params(theta), jnp.asarray(CENTERS_KX3))
  g = theta - CENTERS_KX3  # ∇L_s = θ − c_s
  unit = g / np.linalg.norm(g, axis=1, keepdims=True)
  np.testing.assert_allclose(out["cosine"], unit @ unit.T, atol=1e-6)
  np.testing.assert_allclose(out["grad_norms"], np.linalg.norm(g, axis=1), rtol=1e-6)
  off = (unit @ unit.T)[~np.eye(3, dtype=bool)]
  assert out["mean_pairwise"] == pytest.approx(off.mean(), abs=1e-6)


def test_cosine_matrix_of_parallel_opposite_and_zero_gradients():
  grads = {"a": jnp.array([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])}
  np.testing.assert_allclose(cosine_matrix(grads)[0], [1.0, 1.0, -1.0, 0.0], atol=1e-7)


def test_finetuning_matches_the_closed_form_gd_trajectory():
  theta = np.array([0.5, -1.0, 2.0], np.float32)
  eta, steps = 0.1, 25
  theta_K = finetune_per_source(
    loss_fn, _params(theta), jnp.asarray(CENTERS_KX3), optax.sgd(eta), steps
  )
  # GD on ½‖θ − c‖²: θ_T = c + (1 − η)^T (θ − c).
  want = CENTERS_KX3 + (1 - eta) ** steps * (theta - CENTERS_KX3)
  got = np.concatenate([theta_K["w"], theta_K["v"]], axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_source_minima_closed_forms():
  theta = np.array([0.5, -1.0, 2.0], np.float32)
  eta, steps, gamma = 0.5, 60, 0.1  # (1 − η)^60 ≈ 1e-18: θ_s = c_s.
  out = source_minima(
    loss_fn,
    _params(theta),
    jnp.asarray(CENTERS_KX3),
    optax.sgd(eta),
    steps,
    proxy_step=gamma,
    points=33,
  )
  c = CENTERS_KX3.astype(np.float64)
  np.testing.assert_allclose(out["distance_to_start"], np.linalg.norm(c - theta, axis=1), rtol=1e-5)
  dist = np.linalg.norm(c[:, None] - c[None], axis=-1)
  np.testing.assert_allclose(out["pairwise_distance"], dist, rtol=1e-5, atol=1e-6)
  loss_start = 0.5 * np.sum((theta - c) ** 2, axis=1)
  np.testing.assert_allclose(out["loss_start"], loss_start, rtol=1e-6)
  np.testing.assert_allclose(out["loss_end"], 0.0, atol=1e-8)
  np.testing.assert_allclose(out["loss_drop"], loss_start, rtol=1e-5)
  # The mixture is ½·mean_s‖θ − c_s‖², convex: on the segment c_i → c_j its
  # excess over the endpoints' mean is ≤ 0, and its maximum sits at an endpoint,
  # where it equals ½|L_mix(c_i) − L_mix(c_j)|.
  mix = lambda x: 0.5 * np.mean(np.sum((x - c) ** 2, axis=1))
  for i in range(3):
    for j in range(3):
      if i != j:
        want = 0.5 * abs(mix(c[i]) - mix(c[j]))
        assert out["pairwise_barrier"][i, j] == pytest.approx(want, abs=1e-4)
  # First-order proxy: L_s(θ) − L_s(θ − γ(θ − c̄)).
  stepped = theta - gamma * (theta - c.mean(0))
  proxy = loss_start - 0.5 * np.sum((stepped - c) ** 2, axis=1)
  np.testing.assert_allclose(out["first_order_proxy"], proxy, rtol=1e-4, atol=1e-6)


def test_mismatched_source_axes_are_named():
  with pytest.raises(ValueError, match="same leading source axis"):
    gradient_similarity(
      loss_fn, _params(np.zeros(3)), {"a": jnp.zeros((3, 3)), "b": jnp.zeros((2, 3))}
    )
