"""The owner layout: per-matrix work (Newton–Schulz, SVD) on whole matrices, one owner each.

Why: under FSDP a Muon leaf is sharded over devices, and GSPMD partitions each of the
Newton–Schulz iteration's matmuls, inserting collectives inside every step (about 15 matmuls
for 5 quintic steps, each with its all-gather or all-reduce). The owner layout moves data once
instead: same-shape matrices are stacked (stacked leaves (L, m, n) count as L matrices), the
stack is padded with zero matrices to a multiple of the device count and resharded so that
every device holds whole matrices (stack axis over all mesh axes), the per-matrix function runs
inside `jax.shard_map` (local code: no collective can appear in it), and the results go back to
the leaves' own shardings. The two reshards (all-to-all or all-gather + slice, GSPMD's choice)
are outside the iteration, so their number does not grow with the number of steps; the
iteration's FLOPs are split over the devices instead of repeated or partitioned per matmul.
Zero padding is safe for orthogonalization (0 maps to 0) and costs at most devices − 1
matrices of idle work per shape.

The mesh is the ambient one (`jax.set_mesh`, which the GPT-2 trainer enters around its jitted
steps), so optimizers need no mesh argument and work unchanged without one. References: Keller
Jordan's distributed Muon (whole matrices round-robin), Dion (all-to-all unshard), marin's Muon
(3-D stacks resharded to P(all axes, None, None)); see SCALEOUT.md.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P


def ambient_mesh():
  """The mesh of the enclosing `jax.set_mesh`, or None outside one."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def default_enabled(mesh) -> bool:
  """On under FSDP (a "fsdp" axis of size > 1, where the leaves are sharded); off under plain
  data parallelism, where every device holds whole matrices already."""
  return mesh is not None and dict(mesh.shape).get("fsdp", 1) > 1


def _stacks(columns) -> dict[tuple, list[int]]:
  """Indices of the leaves grouped by the (matrix shape, dtype) of each of their inputs."""
  groups: dict[tuple, list[int]] = {}
  for i, column in enumerate(columns):
    key = tuple((tuple(x.shape[-2:]), jnp.dtype(x.dtype)) for x in column)
    groups.setdefault(key, []).append(i)
  return groups


def _owned(ndim: int, axes: tuple) -> P:
  """The leading (stack) axis over every device, the rest whole."""
  return P(axes, *([None] * (ndim - 1)))


def tree_map(fn: Callable, tree: Any, *rest: Any, enabled: bool | None = None, mesh=None) -> Any:
  """``jax.tree.map(fn, tree, *rest)`` for a ``fn`` of one matrix per tree that also maps
  stacks (S, m, n) matrix by matrix, computed in the owner layout (module docstring) when
  ``enabled`` (None: `default_enabled`) and a mesh of several devices is given or ambient;
  else plain tree.map. ``fn`` returns an array or a tuple of arrays, each with the stack axis
  first and any trailing shape (a matrix, or () for a per-matrix scalar): at each leaf, its
  outputs get the leaf's stack shape (``leaf.shape[:-2]``) back. Every input of a leaf must
  have the same stack shape. Leaves of rank < 2 are mapped as they are. Zero matrices pad a
  stack to a multiple of the device count: ``fn`` must not fail on them (their results are
  dropped)."""
  mesh = ambient_mesh() if mesh is None else mesh
  enabled = default_enabled(mesh) if enabled is None else enabled
  leaves, treedef = jax.tree.flatten(tree)
  if not enabled or mesh is None or mesh.size == 1 or not leaves:
    return jax.tree.map(fn, tree, *rest)
  columns = list(zip(leaves, *(treedef.flatten_up_to(r) for r in rest)))
  axes = tuple(mesh.axis_names)
  out: list = [None] * len(leaves)
  for key, idx in _stacks(columns).items():
    if any(len(shape) < 2 for shape, _ in key):  # A vector a custom routing sent here.
      for i in idx:
        out[i] = fn(*columns[i])
      continue
    counts = [math.prod(leaves[i].shape[:-2]) for i in idx]
    stacks = []
    for j, (shape, _) in enumerate(key):
      parts = [columns[i][j].reshape(-1, *shape) for i in idx]
      stack = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
      pad = -stack.shape[0] % mesh.size
      if pad:
        stack = jnp.concatenate([stack, jnp.zeros((pad, *shape), stack.dtype)])
      owned = jax.sharding.NamedSharding(mesh, _owned(3, axes))
      stacks.append(jax.lax.with_sharding_constraint(stack, owned))
    out_specs = jax.tree.map(lambda o: _owned(o.ndim, axes), jax.eval_shape(fn, *stacks))
    in_specs = (_owned(3, axes),) * len(stacks)
    result = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*stacks)
    start = 0
    for i, count in zip(idx, counts):
      stack_shape = leaves[i].shape[:-2]
      out[i] = jax.tree.map(
        lambda r, s=start, n=count, b=stack_shape: r[s : s + n].reshape(*b, *r.shape[1:]), result
      )
      start += count
  return jax.tree.unflatten(treedef, out)
