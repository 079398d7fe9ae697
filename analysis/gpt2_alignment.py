"""Weight matching for GPT-2 (`models.gpt2`), on `analysis.alignment`'s PermutationSpec.

Two GPT-2s from different initializations can be far apart in weight space only
because their units are listed in different orders; these permutations leave
the function exactly unchanged:

- the residual stream (d): wte/wpe columns, every LayerNorm's scale and bias,
  the rows of c_attn and c_fc, the columns (and biases) of both c_proj, ln_f;
  the tied head follows wte. LayerNorm's mean and variance over d do not
  depend on the order of d, so one π_res for the whole model is a symmetry.
- per layer, the attention heads (N): q, k, v columns and c_proj rows, block-wise;
- per layer, the dimensions inside a head (H) shared by q and k (q·k is a sum
  over them) and, separately, by v and c_proj's rows. One permutation per
  layer, the same in every head: a subgroup of the per-head permutations
  (those need a permutation per head and do not fit an axis-based spec), so the
  matching is exact for a model permuted by it and a little weaker otherwise.
- per layer, the MLP hidden units (4d): c_fc columns and bias, c_proj rows.

To express heads and head dimensions as axes, `split_heads` reshapes c_attn
(d, 3·N·H) into q/k/v kernels (d, N, H) and biases (N, H), and c_proj (N·H, d)
into (N, H, d); `merge_heads` undoes it. The matching and the permutation act
on the split tree; `align_gpt2` returns B in the model's own layout.
"""

import jax
import numpy as np

from analysis import alignment


def _layers(params) -> list[str]:
  return sorted((k for k in params if k.startswith("h_")), key=lambda k: int(k[2:]))


def split_heads(params, n_head: int) -> dict:
  """The tree with h_i/attn's c_attn as q, k, v (d, N, H) and c_proj (N, H, d)."""
  out = {k: v for k, v in params.items() if not k.startswith("h_")}
  for name in _layers(params):
    layer = dict(params[name])
    attn = layer["attn"]
    kernel, bias = attn["c_attn"]["kernel"], attn["c_attn"]["bias"]
    d = kernel.shape[0]
    h = d // n_head
    kernel_dx3xNxH = kernel.reshape(d, 3, n_head, h)
    bias_3xNxH = bias.reshape(3, n_head, h)
    split = {
      part: {"kernel": kernel_dx3xNxH[:, i], "bias": bias_3xNxH[i]}
      for i, part in enumerate(("q", "k", "v"))
    }
    split["c_proj"] = {
      "kernel": attn["c_proj"]["kernel"].reshape(n_head, h, d),
      "bias": attn["c_proj"]["bias"],
    }
    layer["attn"] = split
    out[name] = layer
  return out


def merge_heads(split) -> dict:
  """`split_heads` undone: the model's own parameter layout."""
  out = {k: v for k, v in split.items() if not k.startswith("h_")}
  for name in _layers(split):
    layer = dict(split[name])
    attn = layer["attn"]
    d, n, h = attn["q"]["kernel"].shape
    stack = lambda key, parts: np.stack([np.asarray(attn[p][key]) for p in parts], axis=-3)
    kernel = stack("kernel", "qkv").reshape(d, 3 * n * h)
    bias = np.stack([np.asarray(attn[p]["bias"]) for p in "qkv"]).reshape(3 * n * h)
    layer["attn"] = {
      "c_attn": {"kernel": kernel, "bias": bias},
      "c_proj": {
        "kernel": np.asarray(attn["c_proj"]["kernel"]).reshape(n * h, d),
        "bias": attn["c_proj"]["bias"],
      },
    }
    out[name] = layer
  return out


def gpt2_permutation_spec(split) -> alignment.PermutationSpec:
  """The spec of a `split_heads` tree (module docstring for the symmetries)."""
  r = "res"
  axes = {
    "wte/embedding": (None, r),
    "wpe/embedding": (None, r),
    "ln_f/scale": (r,),
    "ln_f/bias": (r,),
  }
  for name in _layers(split):
    heads, qk, vo, mlp = (f"{name}/{p}" for p in ("heads", "qk", "vo", "mlp"))
    a = f"{name}/attn"
    for ln in ("ln_1", "ln_2"):
      axes[f"{name}/{ln}/scale"] = (r,)
      axes[f"{name}/{ln}/bias"] = (r,)
    for part, dim in (("q", qk), ("k", qk), ("v", vo)):
      axes[f"{a}/{part}/kernel"] = (r, heads, dim)
      axes[f"{a}/{part}/bias"] = (heads, dim)
    axes[f"{a}/c_proj/kernel"] = (heads, vo, r)
    axes[f"{a}/c_proj/bias"] = (r,)
    axes[f"{name}/mlp/c_fc/kernel"] = (r, mlp)
    axes[f"{name}/mlp/c_fc/bias"] = (mlp,)
    axes[f"{name}/mlp/c_proj/kernel"] = (mlp, r)
    axes[f"{name}/mlp/c_proj/bias"] = (r,)
  return alignment.permutation_spec_from_axes(axes)


def random_permutations(spec: alignment.PermutationSpec, split, seed: int) -> dict:
  """A uniformly random element of the spec's group (for the known-answer test)."""
  leaves = alignment.leaf_arrays(split)
  rng = np.random.default_rng(seed)
  return {
    p: rng.permutation(np.shape(leaves[axes[0][0]])[axes[0][1]])
    for p, axes in spec.perm_to_axes.items()
  }


def permute_gpt2(params, perms: dict, n_head: int) -> dict:
  """params with ``perms`` applied (same function, other unit order)."""
  split = split_heads(params, n_head)
  spec = gpt2_permutation_spec(split)
  moved = alignment.apply_permutation(spec, perms, split)
  return merge_heads(jax.tree.map(np.asarray, moved))


def align_gpt2(params_a, params_b, n_head: int, seed: int = 0, max_iter: int = 100):
  """(B permuted to match A in the model's layout, the permutations)."""
  split_a = jax.tree.map(np.asarray, split_heads(params_a, n_head))
  split_b = jax.tree.map(np.asarray, split_heads(params_b, n_head))
  spec = gpt2_permutation_spec(split_a)
  perms = alignment.weight_matching(spec, split_a, split_b, seed, max_iter)
  moved = alignment.apply_permutation(spec, perms, split_b)
  return merge_heads(jax.tree.map(np.asarray, moved)), perms
