"""GPT-2 (Radford et al. 2019) as a flax.linen module, parameter for parameter.

    model = GPT2(CONFIGS["tiny"])
    params = init_params(model, jax.random.PRNGKey(0))
    logits_BxTxV = model.apply({"params": params}, tokens_BxT)

Architecture: learned token (wte) and position (wpe) embeddings, n_layer
pre-LayerNorm blocks x += attn(ln_1(x)); x += mlp(ln_2(x)) with causal
multi-head self-attention and a tanh-GELU MLP (d -> 4d -> d), a final LayerNorm
(ln_f), and the LM head tied to the token embedding (logits = x @ wte^T).
Initialization as GPT-2/nanoGPT: every kernel and embedding N(0, 0.02²), the two
residual projections (attn/c_proj, mlp/c_proj) N(0, (0.02/√(2·n_layer))²),
biases 0, LayerNorm scale 1.

Parameter names (an optimizer rule routes by them; models/gpt2_hf.py maps them
to Hugging Face's), kernels in flax layout (fan_in, fan_out):

    wte/embedding (V, d)   wpe/embedding (ctx, d)
    h_i/ln_1/{scale,bias}  h_i/attn/c_attn/{kernel (d, 3d), bias}
    h_i/attn/c_proj/{kernel (d, d), bias}  h_i/ln_2/{scale,bias}
    h_i/mlp/c_fc/{kernel (d, 4d), bias}    h_i/mlp/c_proj/{kernel (4d, d), bias}
    ln_f/{scale,bias}

Dtypes: parameters in ``param_dtype`` (f32), matmuls in ``dtype`` (f32 or
bf16); LayerNorm statistics and the loss are always f32.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  vocab_size: int = 50257
  block_size: int = 1024  # context length: rows of wpe
  n_layer: int = 12
  n_head: int = 12
  d_model: int = 768
  dropout: float = 0.0  # embedding, attention-probability and residual dropout
  dtype: Any = jnp.float32  # compute dtype of the matmuls
  param_dtype: Any = jnp.float32
  remat: bool = False  # recompute each block in the backward pass (saves memory)
  layer_norm_eps: float = 1e-5
  init_std: float = 0.02

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_head


# GPT-2's own sizes (Radford et al. 2019, Table 2 as released), and two that
# train on a CPU in minutes (vocab 256: bytes; override it for a BPE tokenizer).
CONFIGS = {
  "tiny": GPT2Config(vocab_size=256, block_size=128, n_layer=2, n_head=2, d_model=64),
  "small": GPT2Config(vocab_size=256, block_size=256, n_layer=4, n_head=4, d_model=256),
  "124m": GPT2Config(n_layer=12, n_head=12, d_model=768),
  "355m": GPT2Config(n_layer=24, n_head=16, d_model=1024),
  "774m": GPT2Config(n_layer=36, n_head=20, d_model=1280),
  "1.5b": GPT2Config(n_layer=48, n_head=25, d_model=1600),
}


def check_config(config: GPT2Config) -> None:
  if config.d_model % config.n_head:
    raise ValueError(
      f"GPT-2 d_model={config.d_model} is not divisible by "
      f"n_head={config.n_head}; pick sizes with d_model % n_head == 0."
    )
  if not 0.0 <= config.dropout < 1.0:
    raise ValueError(f"GPT-2 dropout must be in [0, 1), got {config.dropout}.")


def _normal(std):
  return nn.initializers.normal(stddev=std)


class CausalSelfAttention(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool):
    c = self.config
    B, T, D = x_BxTxD.shape
    N, H = c.n_head, c.head_dim
    dense = lambda features, std, name: nn.Dense(
      features, kernel_init=_normal(std), dtype=c.dtype, param_dtype=c.param_dtype, name=name
    )
    # Matmuls on (B·T, D): XLA:CPU runs the weight gradient of a 3-D input
    # (a contraction over two axes) at about half speed; reshapes are free.
    qkv_BxTx3D = dense(3 * D, c.init_std, "c_attn")(x_BxTxD.reshape(B * T, D)).reshape(B, T, 3 * D)
    # Hugging Face's c_attn lays its output out as [q | k | v], each (N, H):
    # the same split keeps checkpoints interchangeable.
    q_BxTxD, k_BxTxD, v_BxTxD = jnp.split(qkv_BxTx3D, 3, axis=-1)
    q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = (a.reshape(B, T, N, H) for a in (q_BxTxD, k_BxTxD, v_BxTxD))
    if c.dropout > 0 and not deterministic:
      # The fused kernel has no dropout on the attention probabilities, so
      # training with dropout takes the explicit (GPT-2-exact) path.
      y_BxTxNxH = _attention_with_dropout(
        q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, c.dropout, self.make_rng("dropout")
      )
    else:
      # cuDNN flash attention on GPUs, XLA elsewhere.
      y_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, is_causal=True)
    y_BxTxD = y_BxTxNxH.reshape(B, T, D)
    proj_std = c.init_std / (2 * c.n_layer) ** 0.5
    y_BxTxD = dense(D, proj_std, "c_proj")(y_BxTxD.reshape(B * T, D)).reshape(B, T, D)
    return nn.Dropout(c.dropout)(y_BxTxD, deterministic=deterministic)


def _attention_with_dropout(q_BxTxNxH, k_BxSxNxH, v_BxSxNxH, rate, rng):
  T, S, H = q_BxTxNxH.shape[1], k_BxSxNxH.shape[1], q_BxTxNxH.shape[-1]
  scores_BxNxTxS = jnp.einsum("btnh,bsnh->bnts", q_BxTxNxH, k_BxSxNxH).astype(jnp.float32)
  scores_BxNxTxS = scores_BxNxTxS / jnp.sqrt(jnp.float32(H))
  causal_TxS = jnp.tril(jnp.ones((T, S), bool))
  scores_BxNxTxS = jnp.where(causal_TxS, scores_BxNxTxS, jnp.finfo(jnp.float32).min)
  probs_BxNxTxS = jax.nn.softmax(scores_BxNxTxS, axis=-1)
  keep_BxNxTxS = jax.random.bernoulli(rng, 1.0 - rate, probs_BxNxTxS.shape)
  probs_BxNxTxS = jnp.where(keep_BxNxTxS, probs_BxNxTxS / (1.0 - rate), 0.0)
  return jnp.einsum("bnts,bsnh->btnh", probs_BxNxTxS.astype(v_BxSxNxH.dtype), v_BxSxNxH)


class MLP(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool):
    c = self.config
    B, T, D = x_BxTxD.shape
    x_MxD = x_BxTxD.reshape(B * T, D)  # M = B·T rows: see CausalSelfAttention
    h_MxF = nn.Dense(
      4 * D, kernel_init=_normal(c.init_std), dtype=c.dtype, param_dtype=c.param_dtype, name="c_fc"
    )(x_MxD)
    h_MxF = jax.nn.gelu(h_MxF, approximate=True)  # GPT-2's "gelu_new" (tanh)
    y_MxD = nn.Dense(
      D,
      kernel_init=_normal(c.init_std / (2 * c.n_layer) ** 0.5),
      dtype=c.dtype,
      param_dtype=c.param_dtype,
      name="c_proj",
    )(h_MxF)
    y_BxTxD = y_MxD.reshape(B, T, D)
    return nn.Dropout(c.dropout)(y_BxTxD, deterministic=deterministic)


class Block(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool):
    c = self.config
    ln = lambda name: nn.LayerNorm(
      epsilon=c.layer_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype, name=name
    )
    x_BxTxD = x_BxTxD + CausalSelfAttention(c, name="attn")(ln("ln_1")(x_BxTxD), deterministic)
    x_BxTxD = x_BxTxD + MLP(c, name="mlp")(ln("ln_2")(x_BxTxD), deterministic)
    return x_BxTxD


class GPT2(nn.Module):
  """tokens_BxT (int) -> logits_BxTxV (in the compute dtype)."""

  config: GPT2Config

  @nn.compact
  def __call__(self, tokens_BxT, deterministic: bool = True):
    c = self.config
    check_config(c)
    T = tokens_BxT.shape[-1]
    if T > c.block_size:
      raise ValueError(
        f"GPT-2 got sequences of length {T} but its context (block_size) is "
        f"{c.block_size}; crop the inputs or raise block_size."
      )
    embed = lambda n, name: nn.Embed(
      n,
      c.d_model,
      embedding_init=_normal(c.init_std),
      dtype=c.dtype,
      param_dtype=c.param_dtype,
      name=name,
    )
    wte = embed(c.vocab_size, "wte")
    x_BxTxD = wte(tokens_BxT) + embed(c.block_size, "wpe")(jnp.arange(T))
    # The residual stream stays in the parameter dtype (as under torch autocast):
    # bf16 block outputs are added to an f32 sum.
    x_BxTxD = x_BxTxD.astype(c.param_dtype)
    x_BxTxD = nn.Dropout(c.dropout)(x_BxTxD, deterministic=deterministic)
    # static_argnums counts self as 0: `deterministic` is a Python bool.
    block_cls = nn.remat(Block, static_argnums=(2,)) if c.remat else Block
    for i in range(c.n_layer):
      x_BxTxD = block_cls(c, name=f"h_{i}")(x_BxTxD, deterministic)
    x_BxTxD = nn.LayerNorm(
      epsilon=c.layer_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype, name="ln_f"
    )(x_BxTxD)
    return wte.attend(x_BxTxD)  # tied LM head


def init_params(model: GPT2, rng: jax.Array, seq_len: int = 8) -> dict:
  """The parameter pytree (shapes do not depend on seq_len)."""
  tokens_1xT = jnp.zeros((1, min(seq_len, model.config.block_size)), jnp.int32)
  return model.init(rng, tokens_1xT)["params"]


def cross_entropy(logits_BxTxV, targets_BxT, mask_BxT=None):
  """Mean next-token cross-entropy in f32 over the tokens where mask is true.

  Returns (loss, number of tokens counted)."""
  logits_BxTxV = logits_BxTxV.astype(jnp.float32)
  logz_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  target_logit_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  nll_BxT = logz_BxT - target_logit_BxT
  if mask_BxT is None:
    mask_BxT = jnp.ones_like(nll_BxT, dtype=bool)
  mask_BxT = mask_BxT.astype(jnp.float32)
  count = mask_BxT.sum()
  return (nll_BxT * mask_BxT).sum() / jnp.maximum(count, 1.0), count


def loss_fn(
  params, model: GPT2, inputs_BxT, targets_BxT, mask_BxT=None, dropout_rng: jax.Array | None = None
):
  """Next-token loss of a batch; dropout is on iff a dropout_rng is given."""
  rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
  logits_BxTxV = model.apply(
    {"params": params}, inputs_BxT, deterministic=dropout_rng is None, rngs=rngs
  )
  return cross_entropy(logits_BxTxV, targets_BxT, mask_BxT)[0]


def count_params(params, exclude_position_embeddings: bool = False) -> int:
  """All parameters (the tied head counted once); optionally without wpe."""
  n = sum(int(x.size) for x in jax.tree.leaves(params))
  if exclude_position_embeddings:
    n -= int(params["wpe"]["embedding"].size)
  return n


def num_params_of_config(config: GPT2Config, exclude_position_embeddings: bool = False) -> int:
  """count_params without building the model."""
  d, L, V = config.d_model, config.n_layer, config.vocab_size
  per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
  n = V * d + L * per_block + 2 * d
  return n if exclude_position_embeddings else n + config.block_size * d


def flops_per_token(config: GPT2Config, seq_len: int) -> float:
  """Training FLOPs (forward + backward) per token, the PaLM / nanoGPT
  `estimate_mfu` convention: 6·N + 12·n_layer·n_head·head_dim·T.

  N counts every parameter except the position embeddings (nanoGPT's
  non-embedding count: the tied wte stays in, as the LM head's matmul);
  6·N is the matmuls against weights (2 forward, 4 backward), and the second
  term the attention scores and weighted sum (QKᵀ and AV) at sequence length T,
  without the causal-mask saving. LayerNorm, GELU and softmax are left out.
  """
  N = num_params_of_config(config, exclude_position_embeddings=True)
  return 6.0 * N + 12.0 * config.n_layer * config.n_head * config.head_dim * seq_len
