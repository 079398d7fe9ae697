"""Aligning hidden units by weight matching, before interpolating (git-re-basin).

Permuting the hidden units of a network (the columns of one layer's kernel,
its bias, and the rows of the next kernel, all by the same π) leaves its
function unchanged, so two solutions can be far apart in parameter space only
because their units are listed in different orders. Weight matching
(Ainsworth, Hayase, Srinivasa, "Git Re-Basin: Merging Models modulo
Permutation Symmetries", ICLR 2023, Algorithm 1) picks the permutations of B
that maximize Σ_leaves ⟨θ_A, π(θ_B)⟩, one permutation at a time: with the
others fixed, the best π_p solves a linear assignment problem on

    C_p = Σ_{(leaf, axis) permuted by p} A_leaf^(axis) · π_{≠p}(B_leaf)^(axis)ᵀ

(X^(axis): the leaf with ``axis`` moved first, flattened to rows), solved with
`scipy.optimize.linear_sum_assignment`; repeat in random order until no π
improves the sum. Entezari et al. (2022) conjecture that after such an
alignment, SGD solutions are linearly connected.

A `PermutationSpec` names, for each permutation, the (leaf, axis) pairs it
acts on; leaves are named by their path, "hidden/kernel". Leaves the spec does
not mention are not permuted. Convention: perms[p][i] is the unit of B that
goes to position i, so `apply_permutation` takes B's entries perms[p] along
each permuted axis, and the aligned B matches A unit for unit.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from training.metrics import leaf_name

LeafPath = str | Sequence[str]


class PermutationSpec(NamedTuple):
  """perm_to_axes: perm name -> [(leaf name, axis)];
  axes_to_perm: leaf name -> (perm name or None for each axis)."""

  perm_to_axes: dict
  axes_to_perm: dict


def permutation_spec_from_axes(axes_to_perm: dict) -> PermutationSpec:
  """The spec from {leaf path: (perm name or None, one per axis)}."""
  axes = {_leaf_key(path): tuple(perms) for path, perms in axes_to_perm.items()}
  perm_to_axes = {}
  for leaf, perms in axes.items():
    for axis, perm in enumerate(perms):
      if perm is not None:
        perm_to_axes.setdefault(perm, []).append((leaf, axis))
  return PermutationSpec(perm_to_axes, axes)


def two_layer_permutation_spec(
  hidden_kernel: LeafPath = "hidden/kernel",
  hidden_bias: LeafPath | None = "hidden/bias",
  output_kernel: LeafPath = "output/kernel",
  perm: str = "hidden",
) -> PermutationSpec:
  """x -> relu(x·W + b)·A (+ c): W (d_in, m) columns, b (m,) and A (m, d_out) rows
  share one permutation of the m hidden units; c (the output bias) is not
  permuted. Leaf paths are arguments so any naming fits (None: no bias)."""
  axes = {hidden_kernel: (None, perm), output_kernel: (perm, None)}
  if hidden_bias is not None:
    axes[hidden_bias] = (perm,)
  return permutation_spec_from_axes(axes)


def relu2_permutation_spec(params) -> PermutationSpec:
  """The spec of `models.relu2.TwoLayerReLU` params: hidden/kernel (d, m),
  hidden/bias (m,) if present, head/kernel (m, out). Also takes the model's
  variables {"params": {...}} (names then carry the "params/" prefix)."""
  names = set(leaf_arrays(params))
  prefix = "params/" if "params/hidden/kernel" in names else ""
  needed = [prefix + "hidden/kernel", prefix + "head/kernel"]
  missing = [n for n in needed if n not in names]
  if missing:
    raise ValueError(f"Not relu2 params: missing {missing}; leaves are {sorted(names)}.")
  if np.ndim(leaf_arrays(params)[needed[0]]) != 2:
    raise ValueError(
      "relu2_permutation_spec takes one network's params (hidden/kernel "
      "of rank 2); index the seed axis of stacked params first."
    )
  bias = prefix + "hidden/bias"
  return two_layer_permutation_spec(needed[0], bias if bias in names else None, needed[1])


def leaf_arrays(params) -> dict:
  """{leaf name: array} of a pytree, names like "hidden/kernel"."""
  return {leaf_name(path): x for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def apply_permutation(spec: PermutationSpec, perms: dict, params):
  """params with every permuted axis reindexed by its permutation (jit-friendly; NumPy
  leaves stay NumPy, with no device round trip)."""
  _check_spec(spec, params)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for path, x in flat:
    name = leaf_name(path)
    take = np.take if isinstance(x, np.ndarray) else jnp.take
    for axis, perm in enumerate(spec.axes_to_perm.get(name, ())):
      if perm is not None:
        x = take(x, np.asarray(perms[perm]), axis=axis)
    out.append(x)
  return jax.tree.unflatten(treedef, out)


def weight_matching(
  spec: PermutationSpec,
  params_a,
  params_b,
  seed: int = 0,
  max_iter: int = 100,
  init_perms: dict | None = None,
) -> dict:
  """{perm name: index array} aligning B to A (module docstring); numpy/scipy."""
  _check_spec(spec, params_a)
  _check_spec(spec, params_b)
  a = {k: np.asarray(v, np.float64) for k, v in leaf_arrays(params_a).items()}
  b = {k: np.asarray(v, np.float64) for k, v in leaf_arrays(params_b).items()}
  sizes = {p: a[leaf].shape[axis] for p, axes in spec.perm_to_axes.items() for leaf, axis in axes}
  perms = (
    {p: np.arange(n) for p, n in sizes.items()}
    if init_perms is None
    else {p: np.asarray(v) for p, v in init_perms.items()}
  )
  rng = np.random.default_rng(seed)
  names = sorted(sizes)
  for _ in range(max_iter):
    improved = False
    for p in rng.permutation(names):
      n = sizes[p]
      cost_NxN = np.zeros((n, n))
      for leaf, axis in spec.perm_to_axes[p]:
        w_b = _permute_except(spec, perms, leaf, b[leaf], axis)
        cost_NxN += (
          np.moveaxis(a[leaf], axis, 0).reshape(n, -1) @ np.moveaxis(w_b, axis, 0).reshape(n, -1).T
        )
      _, cols = linear_sum_assignment(cost_NxN, maximize=True)
      old, new = cost_NxN[np.arange(n), perms[p]].sum(), cost_NxN[np.arange(n), cols].sum()
      # Strict improvement (with a tolerance) so ties cannot cycle forever.
      if new > old + 1e-12 * max(1.0, abs(old)):
        improved = True
        perms[p] = cols
    if not improved:
      break
  return perms


def align(spec: PermutationSpec, params_a, params_b, seed: int = 0, max_iter: int = 100):
  """(B permuted to match A, the permutations): interpolate A with the former."""
  perms = weight_matching(spec, params_a, params_b, seed, max_iter)
  return apply_permutation(spec, perms, params_b), perms


def inverse_permutation(perms: dict) -> dict:
  """The permutations that undo ``perms``."""
  return {p: np.argsort(np.asarray(v)) for p, v in perms.items()}


def _permute_except(spec, perms, leaf, x, except_axis):
  for axis, perm in enumerate(spec.axes_to_perm[leaf]):
    if perm is not None and axis != except_axis:
      x = np.take(x, perms[perm], axis=axis)
  return x


def _check_spec(spec: PermutationSpec, params) -> None:
  leaves = leaf_arrays(params)
  sizes = {}
  for leaf, perms in spec.axes_to_perm.items():
    if leaf not in leaves:
      raise ValueError(
        f"PermutationSpec names leaf {leaf!r}, not in params (leaves: {sorted(leaves)})."
      )
    if len(perms) != np.ndim(leaves[leaf]):
      raise ValueError(
        f"PermutationSpec gives {len(perms)} axes for {leaf!r}, which has "
        f"shape {np.shape(leaves[leaf])}."
      )
    for axis, perm in enumerate(perms):
      if perm is not None:
        size = np.shape(leaves[leaf])[axis]
        if sizes.setdefault(perm, size) != size:
          raise ValueError(
            f"Permutation {perm!r} acts on axes of sizes {sizes[perm]} "
            f"and {size} ({leaf!r} axis {axis})."
          )


def align_pairs(params_N, pairs_Px2) -> tuple:
  """(a_P, b_P): the pairs' endpoints stacked, each b permuted to match its a
  (weight matching with `relu2_permutation_spec`); params_N has a leading axis
  N of solutions, pairs_Px2 indexes into it."""
  # On the host once: slicing device arrays pair by pair cost a dispatch and a copy per
  # leaf (about 1.6 ms a pair, most of the relu2 atlas's barrier time).
  params_N = jax.tree.map(np.asarray, params_N)
  spec = relu2_permutation_spec(jax.tree.map(lambda x: x[0], params_N))
  a_list, b_list = [], []
  for i, j in np.asarray(pairs_Px2):
    a = jax.tree.map(lambda x: x[int(i)], params_N)
    b_aligned, _ = align(spec, a, jax.tree.map(lambda x: x[int(j)], params_N))
    a_list.append(a)
    b_list.append(b_aligned)
  stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)
  return stack(a_list), stack(b_list)


def _leaf_key(path: LeafPath) -> str:
  return path if isinstance(path, str) else "/".join(path)
