"""Muon: the Lion-K identity, a NumPy transcription of the reference Muon,
optax.contrib.muon, and which leaves it takes."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

from optimizers import lion_k, muon, muon_labels, scale_by_shape, shape_scale
from optimizers.muon import path_names
from tests.references import reference_muon_step


def _params(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  return {
    "dense_in": {"kernel": jax.random.normal(k[0], (6, 10)), "bias": jnp.zeros(10)},
    "dense_out": {"kernel": jax.random.normal(k[1], (10, 4)) * 0.3},
    "stack": jax.random.normal(k[2], (2, 4, 4)) * 0.3,
    "wte": {"embedding": jax.random.normal(k[3], (12, 6)) * 0.1},
  }


def _loss(p, seed=1):
  """Depends on every leaf, so every leaf gets a gradient."""
  x = jax.random.normal(jax.random.PRNGKey(seed), (16, 6)) + p["wte"]["embedding"][
    : 16 % 12 + 4
  ].sum(0)
  h = jnp.tanh(x @ p["dense_in"]["kernel"] + p["dense_in"]["bias"])
  y = h @ p["dense_out"]["kernel"]
  y = y @ p["stack"][0] @ p["stack"][1]
  return jnp.mean((y - 1.0) ** 2)


def _grads(params, steps, opt):
  """(params, gradient) at each of ``steps`` steps of ``opt``."""
  state = opt.init(params)
  update = jax.jit(opt.update)
  out = []
  for _ in range(steps):
    g = jax.grad(_loss)(params)
    out.append((params, g))
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
  return params, out


def test_muon_side_is_lion_k_nuclear_with_b1_beta_squared():
  beta, lr, wd = 0.9, 0.02, 0.1
  only_matrices = lambda path, leaf: leaf.ndim >= 2  # Route everything 2-D+ to Muon.
  ours = muon(lr, beta=beta, weight_decay=wd, scale="none", routing=only_matrices)
  twin = optax.partition(
    {
      "muon": lion_k(lr, k="nuclear", b1=beta**2, b2=beta, weight_decay=wd),
      "adam": optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0),
    },
    lambda p: muon_labels(p, only_matrices),
  )
  got, _ = _grads(_params(), 10, ours)
  want, _ = _grads(_params(), 10, twin)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want)


@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_numpy_reference_muon(nesterov):
  lr, beta, wd = 0.02, 0.95, 0.05
  params = _params()
  final, trace = _grads(params, 8, muon(lr, beta=beta, nesterov=nesterov, weight_decay=wd))
  w = np.asarray(params["dense_in"]["kernel"], np.float64)
  buf = np.zeros_like(w)
  for p, g in trace:
    np.testing.assert_allclose(p["dense_in"]["kernel"], w, atol=2e-5)
    w, buf = reference_muon_step(
      w, np.asarray(g["dense_in"]["kernel"], np.float64), buf, lr, beta, wd, nesterov
    )
  np.testing.assert_allclose(final["dense_in"]["kernel"], w, atol=2e-5)


def test_matches_optax_contrib_muon_without_nesterov():
  """Without Nesterov, optax's bias correction is a scalar that orthogonalization
  removes, so both must agree on every leaf (AdamW side included)."""
  route = lambda path, leaf: leaf.ndim == 2 and "wte" not in jax.tree_util.keystr(path)
  dims = lambda p: jax.tree_util.tree_map_with_path(
    lambda path, leaf: MuonDimensionNumbers() if route(path, leaf) else None, p
  )
  ours = muon(
    0.02,
    beta=0.9,
    nesterov=False,
    weight_decay=0.1,
    adam_b2=0.99,
    adam_weight_decay=0.01,
    routing=route,
  )
  theirs = optax.contrib.muon(
    0.02,
    beta=0.9,
    nesterov=False,
    weight_decay=0.1,
    adam_b2=0.99,
    adam_weight_decay=0.01,
    muon_weight_dimension_numbers=dims,
  )
  got, _ = _grads(_params(), 10, ours)
  want, _ = _grads(_params(), 10, theirs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5), got, want)


def gpt2_like_params(n_layer=2, d=16, vocab=50, ctx=8):
  layer = lambda: {
    "ln_1": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
    "attn": {
      "c_attn": {"kernel": jnp.zeros((d, 3 * d)), "bias": jnp.zeros(3 * d)},
      "c_proj": {"kernel": jnp.zeros((d, d)), "bias": jnp.zeros(d)},
    },
    "ln_2": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
    "mlp": {
      "c_fc": {"kernel": jnp.zeros((d, 4 * d)), "bias": jnp.zeros(4 * d)},
      "c_proj": {"kernel": jnp.zeros((4 * d, d)), "bias": jnp.zeros(d)},
    },
  }
  return {
    "params": {
      "wte": {"embedding": jnp.zeros((vocab, d))},
      "wpe": {"embedding": jnp.zeros((ctx, d))},
      **{f"h_{i}": layer() for i in range(n_layer)},
      "ln_f": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
      "lm_head": {"kernel": jnp.zeros((d, vocab))},
    }
  }


def test_routing_of_a_gpt2_tree():
  labels = muon_labels(gpt2_like_params())
  flat = {
    jax.tree_util.keystr(p): label for p, label in jax.tree_util.tree_leaves_with_path(labels)
  }
  muon_leaves = sorted(k for k, v in flat.items() if v == "muon")
  assert muon_leaves == sorted(
    f"['params']['h_{i}']['{blk}']['{m}']['kernel']"
    for i in range(2)
    for blk, m in [("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj")]
  )
  # Embeddings, the untied head, biases and LayerNorms all go to AdamW.
  for name in [
    "['params']['wte']['embedding']",
    "['params']['wpe']['embedding']",
    "['params']['lm_head']['kernel']",
    "['params']['ln_f']['scale']",
    "['params']['h_0']['attn']['c_attn']['bias']",
  ]:
    assert flat[name] == "adam", name
  # A stacked (L, m, n) tree (scan over layers) goes to Muon as well.
  assert muon_labels({"blocks": {"mlp": jnp.zeros((12, 8, 32))}})["blocks"]["mlp"] == "muon"


def test_custom_routing_overrides_the_default():
  params = gpt2_like_params()
  everything_2d = lambda path, leaf: leaf.ndim == 2
  labels = muon_labels(params, everything_2d)
  assert labels["params"]["wte"]["embedding"] == "muon"
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
  wte = lambda tree: np.asarray(tree["params"]["wte"]["embedding"], np.float64)
  routed = muon(0.01, routing=everything_2d, method="svd", scale="none")
  update = wte(routed.update(grads, routed.init(params), params)[0])
  sigmas = np.linalg.svd(update, compute_uv=False)
  # Muon's exact polar factor: every singular value of the update is η.
  np.testing.assert_allclose(sigmas, 0.01, rtol=1e-4)
  default = muon(0.01, method="svd", scale="none")
  adam_update = wte(default.update(grads, default.init(params), params)[0])
  # AdamW's first step instead: −η·g/(|g| + ε) ≈ −η·sign(g), whose singular values spread.
  g = wte(grads)
  np.testing.assert_allclose(adam_update, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-4)
  assert np.linalg.svd(adam_update, compute_uv=False).std() > 1e-3


def test_scales():
  assert shape_scale((768, 3072), "shape") == pytest.approx(2.0)
  assert shape_scale((3072, 768), "shape") == 1.0
  assert shape_scale((768, 3072), "rms_match") == pytest.approx(0.2 * 3072**0.5)
  assert shape_scale((5, 7), "none") == 1.0
  u, _ = scale_by_shape("rms_match").update({"w": jnp.ones((4, 9))}, None)
  np.testing.assert_allclose(u["w"], 0.6)
  with pytest.raises(ValueError, match="Unknown Muon scale 'big'"):
    muon(0.1, scale="big")


@pytest.mark.parametrize("mask_kind", ["function", "pytree"])
def test_weight_decay_mask_reaches_the_adamw_side(mask_kind):
  """A masked-out leaf gets no decay on either side: with zero gradients (both
  directions 0) a step is θ ← θ − η·λ·θ on the decayed leaves only."""
  params = gpt2_like_params()
  params = jax.tree.map(lambda p: p + 1.0, params)
  matrices = lambda tree: jax.tree.map(lambda p: p.ndim >= 2, tree)
  mask = matrices if mask_kind == "function" else matrices(params)
  lr, wd, adam_wd = 0.1, 0.5, 0.2
  opt = muon(lr, weight_decay=wd, adam_weight_decay=adam_wd, weight_decay_mask=mask)
  zeros = jax.tree.map(jnp.zeros_like, params)
  new = optax.apply_updates(params, opt.update(zeros, opt.init(params), params)[0])
  labels = muon_labels(params)

  def expected(label, p):
    if p.ndim < 2:
      return p  # LayerNorm scales and biases: masked out on the AdamW side too.
    return p * (1 - lr * (wd if label == "muon" else adam_wd))

  jax.tree.map(
    lambda label, p, n: np.testing.assert_allclose(n, expected(label, p), rtol=1e-6),
    labels,
    params,
    new,
  )


class _Pair(NamedTuple):
  first: Any
  second: Any


def test_path_names_of_dicts_lists_and_namedtuples():
  tree = {
    "hidden": {"kernel": jnp.zeros((2, 2))},
    "blocks": [{"w": jnp.zeros((2, 2))}, _Pair(jnp.zeros(1), (jnp.zeros(1),))],
  }
  names = {"/".join(path_names(p)) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}
  assert names == {"hidden/kernel", "blocks/0/w", "blocks/1/first", "blocks/1/second/0"}
  # Routing reads the names, so an embedding inside a list goes to AdamW.
  assert muon_labels([{"wte": jnp.zeros((4, 4))}, jnp.zeros((4, 4))]) == [{"wte": "adam"}, "muon"]
