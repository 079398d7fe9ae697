"""models.gpt2 against known answers: GPT-2's parameter counts, its init, a
NumPy reference forward pass, causality, the loss and the FLOP estimate."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.gpt2 import (
  CONFIGS,
  GPT2,
  count_params,
  cross_entropy,
  flops_per_token,
  init_params,
  loss_fn,
  num_params_of_config,
)

TINY = CONFIGS["tiny"]
# Eager flax dispatches op by op (slow on a CPU): jit everything a test runs.
_loss = jax.jit(loss_fn, static_argnums=1)
_value_and_grad = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)


def _apply(model, params, tokens):
  return jax.jit(model.apply)({"params": params}, tokens)


def _tiny(**overrides):
  model = GPT2(dataclasses.replace(TINY, **overrides))
  return model, jax.jit(init_params, static_argnums=0)(model, jax.random.PRNGKey(0))


# Hugging Face's parameter counts of gpt2, gpt2-medium, gpt2-large, gpt2-xl (tied head).
@pytest.mark.parametrize(
  "size, expected",
  [("124m", 124_439_808), ("355m", 354_823_168), ("774m", 774_030_080), ("1.5b", 1_557_611_200)],
)
def test_param_counts_match_gpt2(size, expected):
  model = GPT2(CONFIGS[size])
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
  assert count_params(shapes) == expected
  assert num_params_of_config(CONFIGS[size]) == expected


def test_parameter_names_and_shapes():
  params = jax.eval_shape(lambda: init_params(GPT2(CONFIGS["124m"]), jax.random.PRNGKey(0)))
  assert set(params) == {"wte", "wpe", "ln_f"} | {f"h_{i}" for i in range(12)}
  shapes = jax.tree.map(lambda x: x.shape, params["h_3"])
  assert shapes == {
    "ln_1": {"scale": (768,), "bias": (768,)},
    "ln_2": {"scale": (768,), "bias": (768,)},
    "attn": {
      "c_attn": {"kernel": (768, 2304), "bias": (2304,)},
      "c_proj": {"kernel": (768, 768), "bias": (768,)},
    },
    "mlp": {
      "c_fc": {"kernel": (768, 3072), "bias": (3072,)},
      "c_proj": {"kernel": (3072, 768), "bias": (768,)},
    },
  }
  assert params["wte"]["embedding"].shape == (50257, 768)
  assert params["wpe"]["embedding"].shape == (1024, 768)


def test_init_std_follows_gpt2():
  config = dataclasses.replace(CONFIGS["small"], vocab_size=1024)
  params = jax.jit(init_params, static_argnums=0)(GPT2(config), jax.random.PRNGKey(1))
  residual_std = 0.02 / np.sqrt(2 * config.n_layer)
  block = params["h_1"]
  for leaf, std in [
    (params["wte"]["embedding"], 0.02),
    (params["wpe"]["embedding"], 0.02),
    (block["attn"]["c_attn"]["kernel"], 0.02),
    (block["mlp"]["c_fc"]["kernel"], 0.02),
    (block["attn"]["c_proj"]["kernel"], residual_std),
    (block["mlp"]["c_proj"]["kernel"], residual_std),
  ]:
    assert abs(float(jnp.std(leaf)) / std - 1) < 0.03, (leaf.shape, float(jnp.std(leaf)), std)
    assert abs(float(jnp.mean(leaf))) < 0.05 * std
  np.testing.assert_array_equal(block["ln_1"]["scale"], 1.0)
  np.testing.assert_array_equal(block["ln_1"]["bias"], 0.0)
  np.testing.assert_array_equal(block["mlp"]["c_fc"]["bias"], 0.0)


def _numpy_gpt2(params, tokens_BxT, config):
  """GPT-2's forward pass written out in NumPy (float64), the reference."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  ln = lambda x, q: (
    (x - x.mean(-1, keepdims=True))
    / np.sqrt(x.var(-1, keepdims=True) + config.layer_norm_eps)
    * q["scale"]
    + q["bias"]
  )
  dense = lambda x, q: x @ q["kernel"] + q["bias"]
  gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
  B, T = tokens_BxT.shape
  N, H = config.n_head, config.d_model // config.n_head
  x = p["wte"]["embedding"][tokens_BxT] + p["wpe"]["embedding"][:T]
  for i in range(config.n_layer):
    blk = p[f"h_{i}"]
    q, k, v = np.split(dense(ln(x, blk["ln_1"]), blk["attn"]["c_attn"]), 3, axis=-1)
    q, k, v = (a.reshape(B, T, N, H).transpose(0, 2, 1, 3) for a in (q, k, v))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(H)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    y = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, N * H)
    x = x + dense(y, blk["attn"]["c_proj"])
    x = x + dense(gelu(dense(ln(x, blk["ln_2"]), blk["mlp"]["c_fc"])), blk["mlp"]["c_proj"])
  return ln(x, p["ln_f"]) @ p["wte"]["embedding"].T


def test_forward_matches_numpy_reference():
  model, params = _tiny()
  # Random non-trivial LayerNorms and biases, so every parameter matters.
  leaves, treedef = jax.tree.flatten(params)
  params = treedef.unflatten(
    [
      np.asarray(leaf) + 0.1 * np.random.default_rng(i).normal(size=leaf.shape)
      for i, leaf in enumerate(leaves)
    ]
  )
  tokens_BxT = jax.random.randint(jax.random.PRNGKey(2), (3, 20), 0, TINY.vocab_size)
  logits_BxTxV = _apply(model, params, tokens_BxT)
  assert logits_BxTxV.shape == (3, 20, 256)
  np.testing.assert_allclose(
    logits_BxTxV, _numpy_gpt2(params, np.asarray(tokens_BxT), TINY), atol=2e-4, rtol=1e-4
  )


def test_attention_is_causal():
  model, params = _tiny()
  tokens = jax.random.randint(jax.random.PRNGKey(4), (1, 32), 0, 256)
  changed = tokens.at[0, 20].set((tokens[0, 20] + 1) % 256)
  a, b = (_apply(model, params, t) for t in (tokens, changed))
  np.testing.assert_array_equal(a[:, :20], b[:, :20])
  assert float(jnp.abs(a[:, 20:] - b[:, 20:]).max()) > 1e-4


def test_vocab_override_and_context_check():
  model, params = _tiny(vocab_size=1000)
  assert _apply(model, params, jnp.zeros((2, 5), jnp.int32)).shape == (2, 5, 1000)
  with pytest.raises(ValueError, match="block_size"):
    model.apply({"params": params}, jnp.zeros((1, TINY.block_size + 1), jnp.int32))
  with pytest.raises(ValueError, match="divisible"):
    _tiny(n_head=3)


def test_cross_entropy_matches_numpy_with_mask():
  logits = jax.random.normal(jax.random.PRNGKey(5), (2, 4, 7)) * 3
  targets = jax.random.randint(jax.random.PRNGKey(6), (2, 4), 0, 7)
  mask = jnp.array([[1, 1, 0, 1], [0, 1, 1, 0]], bool)
  logits_np = np.asarray(logits, np.float64)
  nll = (
    np.log(np.exp(logits_np).sum(-1))
    - np.take_along_axis(logits_np, np.asarray(targets)[..., None], -1)[..., 0]
  )
  loss, count = cross_entropy(logits.astype(jnp.bfloat16).astype(jnp.float32), targets, mask)
  loss_bf16, _ = cross_entropy(logits, targets, mask)
  assert int(count) == 5
  np.testing.assert_allclose(loss_bf16, nll[np.asarray(mask)].mean(), rtol=1e-5)
  np.testing.assert_allclose(cross_entropy(logits, targets)[0], nll.mean(), rtol=1e-5)
  assert loss.dtype == jnp.float32


def test_loss_at_init_is_log_vocab():
  model, params = _tiny()
  inputs, targets = jax.random.randint(jax.random.PRNGKey(7), (2, 4, 64), 0, 256)
  # std-0.02 init: logits are N(0, about 0.16²) (unit-variance ln_f output of
  # norm 8 against rows of std 0.02), so the loss is log(256) = 5.545 + var/2.
  assert abs(float(_loss(params, model, inputs, targets)) - np.log(256)) < 0.05


def test_dropout_remat_and_bf16():
  model, params = _tiny()
  tokens = jax.random.randint(jax.random.PRNGKey(8), (2, 16), 0, 256)
  base_loss, base_grads = _value_and_grad(params, model, tokens, tokens)
  remat = GPT2(dataclasses.replace(TINY, remat=True))
  loss, grads = _value_and_grad(params, remat, tokens, tokens)
  np.testing.assert_allclose(loss, base_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, base_grads)

  dropped = GPT2(dataclasses.replace(TINY, dropout=0.1))
  same = _loss(params, dropped, tokens, tokens)  # no rng: deterministic
  np.testing.assert_allclose(same, base_loss, rtol=1e-6)
  d1 = _loss(params, dropped, tokens, tokens, dropout_rng=jax.random.PRNGKey(0))
  d2 = _loss(params, dropped, tokens, tokens, dropout_rng=jax.random.PRNGKey(1))
  assert float(d1) != float(d2) and float(d1) != float(base_loss)

  bf16 = GPT2(dataclasses.replace(TINY, dtype=jnp.bfloat16))
  logits = _apply(bf16, params, tokens)
  assert logits.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(logits, np.float32), _apply(model, params, tokens), atol=0.02
  )
  _, grads = _value_and_grad(params, bf16, tokens, tokens)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_flops_per_token_nanogpt_convention():
  # 124M at T=1024: N = 124,439,808 - 1024*768 (wpe) = 123,653,376;
  # 6N = 741,920,256; 12*12 layers*12 heads*64*1024 = 113,246,208.
  assert flops_per_token(CONFIGS["124m"], 1024) == 741_920_256 + 113_246_208
