"""Muon: the Lion-K identity, a NumPy transcription of the reference Muon,
optax.contrib.muon, and which leaves it takes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

from optimizers import lion_k, muon, muon_labels, scale_by_shape, shape_scale
from tests.test_orthogonalization import QUINTIC, reference_newton_schulz


def _params(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  return {"dense_in": {"kernel": jax.random.normal(k[0], (6, 10)), "bias": jnp.zeros(10)},
          "dense_out": {"kernel": jax.random.normal(k[1], (10, 4)) * 0.3},
          "stack": jax.random.normal(k[2], (2, 4, 4)) * 0.3,
          "wte": {"embedding": jax.random.normal(k[3], (12, 6)) * 0.1}}


def _loss(p, seed=1):
  """Depends on every leaf, so every leaf gets a gradient."""
  x = jax.random.normal(jax.random.PRNGKey(seed), (16, 6)) + p["wte"]["embedding"][:16 % 12 + 4].sum(0)
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
      {"muon": lion_k(lr, k="nuclear", b1=beta**2, b2=beta, weight_decay=wd),
       "adam": optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0)},
      lambda p: muon_labels(p, only_matrices))
  got, _ = _grads(_params(), 10, ours)
  want, _ = _grads(_params(), 10, twin)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want)


def _reference_muon_step(w, g, buf, lr, beta, wd, nesterov):
  """NumPy transcription of Muon's step (github.com/KellerJordan/Muon,
  muon.py: lerp momentum, Nesterov lerp, NS5, √max(1, out/in), decoupled wd),
  for the (fan_in, fan_out) layout."""
  buf = beta * buf + (1 - beta) * g
  u = (1 - beta) * g + beta * buf if nesterov else buf
  o = reference_newton_schulz(u, [QUINTIC] * 5)
  o = o * max(1, w.shape[-1] / w.shape[-2]) ** 0.5
  return w * (1 - lr * wd) - lr * o, buf


@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_numpy_reference_muon(nesterov):
  lr, beta, wd = 0.02, 0.95, 0.05
  params = _params()
  final, trace = _grads(params, 8, muon(lr, beta=beta, nesterov=nesterov, weight_decay=wd))
  w = np.asarray(params["dense_in"]["kernel"], np.float64)
  buf = np.zeros_like(w)
  for p, g in trace:
    np.testing.assert_allclose(p["dense_in"]["kernel"], w, atol=2e-5)
    w, buf = _reference_muon_step(w, np.asarray(g["dense_in"]["kernel"], np.float64), buf,
                                  lr, beta, wd, nesterov)
  np.testing.assert_allclose(final["dense_in"]["kernel"], w, atol=2e-5)


def test_matches_optax_contrib_muon_without_nesterov():
  """Without Nesterov, optax's bias correction is a scalar that orthogonalization
  removes, so both must agree on every leaf (AdamW side included)."""
  route = lambda path, leaf: leaf.ndim == 2 and "wte" not in jax.tree_util.keystr(path)
  dims = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, leaf: MuonDimensionNumbers() if route(path, leaf) else None, p)
  ours = muon(0.02, beta=0.9, nesterov=False, weight_decay=0.1, adam_b2=0.99,
              adam_weight_decay=0.01, routing=route)
  theirs = optax.contrib.muon(0.02, beta=0.9, nesterov=False, weight_decay=0.1, adam_b2=0.99,
                              adam_weight_decay=0.01, muon_weight_dimension_numbers=dims)
  got, _ = _grads(_params(), 10, ours)
  want, _ = _grads(_params(), 10, theirs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5), got, want)


def gpt2_like_params(n_layer=2, d=16, vocab=50, ctx=8):
  layer = lambda: {
      "ln_1": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
      "attn": {"c_attn": {"kernel": jnp.zeros((d, 3 * d)), "bias": jnp.zeros(3 * d)},
               "c_proj": {"kernel": jnp.zeros((d, d)), "bias": jnp.zeros(d)}},
      "ln_2": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
      "mlp": {"c_fc": {"kernel": jnp.zeros((d, 4 * d)), "bias": jnp.zeros(4 * d)},
              "c_proj": {"kernel": jnp.zeros((4 * d, d)), "bias": jnp.zeros(d)}}}
  return {"params": {"wte": {"embedding": jnp.zeros((vocab, d))},
                     "wpe": {"embedding": jnp.zeros((ctx, d))},
                     **{f"h_{i}": layer() for i in range(n_layer)},
                     "ln_f": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
                     "lm_head": {"kernel": jnp.zeros((d, vocab))}}}


def test_routing_of_a_gpt2_tree():
  labels = muon_labels(gpt2_like_params())
  flat = {jax.tree_util.keystr(p): l for p, l in jax.tree_util.tree_leaves_with_path(labels)}
  muon_leaves = sorted(k for k, v in flat.items() if v == "muon")
  assert muon_leaves == sorted(
      f"['params']['h_{i}']['{blk}']['{m}']['kernel']" for i in range(2)
      for blk, m in [("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj")])
  # Embeddings, the untied head, biases and LayerNorms all go to AdamW.
  for name in ["['params']['wte']['embedding']", "['params']['wpe']['embedding']",
               "['params']['lm_head']['kernel']", "['params']['ln_f']['scale']",
               "['params']['h_0']['attn']['c_attn']['bias']"]:
    assert flat[name] == "adam", name
  # A stacked (L, m, n) tree (scan over layers) goes to Muon as well.
  assert muon_labels({"blocks": {"mlp": jnp.zeros((12, 8, 32))}})["blocks"]["mlp"] == "muon"


def test_custom_routing_overrides_the_default():
  params = gpt2_like_params()
  everything_2d = lambda path, leaf: leaf.ndim == 2
  labels = muon_labels(params, everything_2d)
  assert labels["params"]["wte"]["embedding"] == "muon"
  opt = muon(0.01, routing=everything_2d)
  state = opt.init(params)
  assert jax.tree.leaves(opt.update(params, state, params)[0])  # Runs end to end.


def test_scales():
  assert shape_scale((768, 3072), "shape") == pytest.approx(2.0)
  assert shape_scale((3072, 768), "shape") == 1.0
  assert shape_scale((768, 3072), "rms_match") == pytest.approx(0.2 * 3072**0.5)
  assert shape_scale((5, 7), "none") == 1.0
  u, _ = scale_by_shape("rms_match").update({"w": jnp.ones((4, 9))}, None)
  np.testing.assert_allclose(u["w"], 0.6)
  with pytest.raises(ValueError, match="Unknown Muon scale 'big'"):
    muon(0.1, scale="big")
