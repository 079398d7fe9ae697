"""Weight matching for GPT-2 (`models.gpt2`), on `analysis.alignment`'s PermutationSpec.

Two GPT-2s from different initializations can be far apart in weight space only
because their units are listed in different orders; these permutations leave
the function exactly unchanged:

- the residual stream (d): wte/wpe columns, every LayerNorm's scale and bias,
  the rows of c_attn and c_fc, the columns (and biases) of both c_proj, ln_f;
  the tied head follows wte. LayerNorm's mean and variance over d do not
  depend on the order of d, so one π_res for the whole model is a symmetry.
- per layer, the attention heads (N): q, k, v columns and c_proj rows, block-wise;
- per layer and head, the dimensions inside the head (H) shared by q and k
  (q·k is a sum over them) and, separately, by v and c_proj's rows: a
  permutation per head, so perms["h_i/qk"] and perms["h_i/vo"] are (N, H)
  arrays, row n for the head at position n (after the heads' permutation).
- per layer, the MLP hidden units (4d): c_fc columns and bias, c_proj rows.

Matching: per-head permutations do not fit an axis-based PermutationSpec, so
`align_gpt2` runs `alignment.weight_matching` on the spec with one within-head
permutation per layer (rows of the (N, H) arrays all equal) for the residual
stream and the MLP units, then solves the heads and their dimensions exactly
given those: the score of B's head m at A's head n is the best within-head
assignment (a linear assignment on H×H), and the heads are assigned on the N×N
matrix of those scores. The shared solution is one candidate of that exact
problem, so the refinement never lowers the matching objective.

To express heads and head dimensions as axes, `split_heads` reshapes c_attn
(d, 3·N·H) into q/k/v kernels (d, N, H) and biases (N, H), and c_proj (N·H, d)
into (N, H, d); `merge_heads` undoes it. The matching and the permutation act
on the split tree; `align_gpt2` returns B in the model's own layout.
"""

import jax
import numpy as np
from scipy.optimize import linear_sum_assignment

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
  out = {}
  for p, axes in spec.perm_to_axes.items():
    size = np.shape(leaves[axes[0][0]])[axes[0][1]]
    if p.endswith(_HEAD_DIMS):
      n_head = np.shape(leaves[axes[0][0]])[1]
      out[p] = np.stack([rng.permutation(size) for _ in range(n_head)])
    else:
      out[p] = rng.permutation(size)
  return out


def permute_gpt2(params, perms: dict, n_head: int) -> dict:
  """params with ``perms`` applied (same function, other unit order)."""
  split = jax.tree.map(np.asarray, split_heads(params, n_head))
  return merge_heads(_apply(gpt2_permutation_spec(split), perms, split))


def align_gpt2(params_a, params_b, n_head: int, seed: int = 0, max_iter: int = 100):
  """(B permuted to match A in the model's layout, the permutations): the module
  docstring's matching."""
  split_a = jax.tree.map(np.asarray, split_heads(params_a, n_head))
  split_b = jax.tree.map(np.asarray, split_heads(params_b, n_head))
  spec = gpt2_permutation_spec(split_a)
  perms = alignment.weight_matching(spec, split_a, split_b, seed, max_iter)
  # B with the residual and MLP permutations only; heads and dims solved next.
  outer = {p: v for p, v in perms.items() if not p.endswith(_PER_LAYER_ATTN)}
  identity = {p: np.arange(len(v)) for p, v in perms.items() if p.endswith(_PER_LAYER_ATTN)}
  b_outer = jax.tree.map(
    np.asarray, alignment.apply_permutation(spec, {**outer, **identity}, split_b)
  )
  for name in _layers(split_a):
    perms.update(_match_heads(name, split_a[name]["attn"], b_outer[name]["attn"]))
  return merge_heads(_apply(spec, perms, split_b)), perms


_HEAD_DIMS = ("/qk", "/vo")
_PER_LAYER_ATTN = ("/heads", "/qk", "/vo")


def _head_features(attn, parts) -> np.ndarray:
  """(N, H, F): per head and dimension, every weight that dimension carries
  (kernels' columns over d, biases; c_proj's rows for "c_proj")."""
  feats = []
  for part in parts:
    if part == "c_proj":
      feats.append(np.asarray(attn["c_proj"]["kernel"], np.float64))  # (N, H, d)
    else:
      feats.append(np.moveaxis(np.asarray(attn[part]["kernel"], np.float64), 0, -1))
      feats.append(np.asarray(attn[part]["bias"], np.float64)[..., None])
  return np.concatenate(feats, axis=-1)


def _match_heads(name: str, attn_a, attn_b) -> dict:
  """{name/heads: (N,), name/qk: (N, H), name/vo: (N, H)}: the exact best heads and
  within-head assignment of B's attention to A's (the residual order fixed)."""
  scores, dims = [], {}
  for key, parts in (("qk", ("q", "k")), ("vo", ("v", "c_proj"))):
    fa, fb = _head_features(attn_a, parts), _head_features(attn_b, parts)
    gram_NxMxHxH = np.einsum("nhf,mkf->nmhk", fa, fb)
    best = np.zeros(gram_NxMxHxH.shape[:2])
    cols = np.zeros(gram_NxMxHxH.shape[:3], dtype=np.int64)
    for n, m in np.ndindex(*best.shape):
      _, cols[n, m] = linear_sum_assignment(gram_NxMxHxH[n, m], maximize=True)
      best[n, m] = gram_NxMxHxH[n, m][np.arange(len(cols[n, m])), cols[n, m]].sum()
    scores.append(best)
    dims[key] = cols
  _, heads = linear_sum_assignment(scores[0] + scores[1], maximize=True)
  rows = np.arange(len(heads))
  return {
    f"{name}/heads": heads,
    f"{name}/qk": dims["qk"][rows, heads],
    f"{name}/vo": dims["vo"][rows, heads],
  }


def _apply(spec, perms: dict, split) -> dict:
  """`alignment.apply_permutation` with per-head dimension permutations: heads
  first, then row n of perms[h_i/qk|vo] inside the head now at position n."""
  shared = {
    p: (np.arange(np.shape(v)[-1]) if p.endswith(_HEAD_DIMS) else v) for p, v in perms.items()
  }
  out = jax.tree.map(np.asarray, alignment.apply_permutation(spec, shared, split))
  for name in _layers(out):
    attn = out[name]["attn"]
    for key, parts in (("qk", ("q", "k")), ("vo", ("v", "c_proj"))):
      idx_NxH = np.broadcast_to(np.asarray(perms[f"{name}/{key}"]), attn["q"]["bias"].shape)
      for part in parts:
        kernel = attn[part]["kernel"]
        if part == "c_proj":  # (N, H, d)
          attn[part]["kernel"] = np.take_along_axis(kernel, idx_NxH[:, :, None], axis=1)
        else:  # (d, N, H), bias (N, H)
          attn[part]["kernel"] = np.take_along_axis(kernel, idx_NxH[None], axis=2)
          attn[part]["bias"] = np.take_along_axis(attn[part]["bias"], idx_NxH, axis=1)
  return out
