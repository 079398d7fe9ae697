"""Loss and accuracy along many paths at many t, in one jitted call.

For P pairs of endpoints (a_p, b_p) (leaves with a leading pair axis) and T
values of t, `evaluate_paths` returns metric_fn(φ_p(t), batch) for every
(p, t) as arrays of shape (P, T). The P·T points are one flat axis that
`jax.lax.map(..., batch_size=B)` walks B points at a time, each chunk vmapped:
memory holds B interpolated parameter copies and B points' activations, never
P·T. Under vmap, the model's matmuls take the B parameter copies as one batched
operand (x_NxD · W_BxDxM), so a chunk runs as a few large matmuls.

B ("auto" by default) comes from the compiled memory use of one point: as many
points as fit in ``memory_budget_bytes``. On CPU the default budget is small
(8 MiB) because the chunk's activations should stay in cache (L2/L3); on an
accelerator it is large (1 GiB) because big chunks are what fill the device.
"""

import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from analysis.paths import check_same_structure, check_t, get_path_fn, num_bends

CPU_MEMORY_BUDGET = 8 * 2**20
ACCELERATOR_MEMORY_BUDGET = 2**30


def all_pairs(n: int, include_self: bool = False) -> np.ndarray:
  """The (i, j) index pairs, i < j (i ≤ j with include_self), shape (P, 2)."""
  pairs = (
    itertools.combinations_with_replacement(range(n), 2)
    if include_self
    else itertools.combinations(range(n), 2)
  )
  return np.asarray(list(pairs), dtype=np.int32).reshape(-1, 2)


def gather_pairs(stacked, pairs):
  """Endpoints of each pair from a pytree stacked over models (leading axis N):
  (a_P, b_P), leaves with a leading pair axis."""
  pairs = np.asarray(pairs)
  if pairs.ndim != 2 or pairs.shape[1] != 2:
    raise ValueError(f"pairs must have shape (P, 2), got {pairs.shape}.")
  return (
    jax.tree.map(lambda x: x[pairs[:, 0]], stacked),
    jax.tree.map(lambda x: x[pairs[:, 1]], stacked),
  )


def evaluate_paths(
  metric_fn: Callable[[Any, Any], Any],
  path: str | Callable,
  a_P,
  b_P,
  ts,
  batch,
  bends_P=None,
  batch_size: int | str = "auto",
  memory_budget_bytes: int | None = None,
  extrapolate: bool = False,
):
  """metric_fn(φ_p(t), batch) for every pair p and every t of ``ts``.

  Args:
    metric_fn: ``(params, batch) -> scalar or pytree of scalars`` (e.g. a loss,
      or {"loss": ..., "accuracy": ...}). Pass the same function object each
      call: it is a static argument of the jitted evaluator.
    path: a kind of `analysis.paths` ("linear", "polychain", "bezier") or a
      callable ``(a, b, t, bends) -> params``.
    a_P, b_P: endpoints, every leaf with a leading pair axis of size P.
    ts: 1-D array of the T values of t.
    batch: the data metric_fn sees, the same at every point.
    bends_P: bends per pair (leaves (P, k, ...)), or None.
    batch_size: points per `lax.map` chunk, or "auto" (module docstring).
    memory_budget_bytes: the "auto" budget; None is the backend's default.
    extrapolate: allow t outside [0, 1] (linear path only).

  Returns:
    metric_fn's output structure with every leaf of shape (P, T).
  """
  ts = jnp.asarray(ts, jnp.float32)
  if ts.ndim != 1:
    raise ValueError(f"ts must be 1-D, got shape {ts.shape}.")
  check_t(ts, allow_outside=extrapolate)
  num_pairs = _num_pairs(a_P, b_P, bends_P)
  path_fn = get_path_fn(path, extrapolate)
  if batch_size == "auto":
    batch_size = auto_batch_size(
      metric_fn, path_fn, a_P, b_P, ts, batch, bends_P, memory_budget_bytes
    )
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int or 'auto', got {batch_size!r}.")
  batch_size = int(min(batch_size, num_pairs * ts.shape[0]))
  return _evaluate(metric_fn, path_fn, batch_size, a_P, b_P, ts, batch, bends_P)


def evaluate_train_test(
  metric_fn, path, a_P, b_P, ts, train_batch, test_batch, bends_P=None, **kwargs
) -> dict:
  """{"train": ..., "test": ...}, each `evaluate_paths` on that batch."""
  return {
    name: evaluate_paths(metric_fn, path, a_P, b_P, ts, data, bends_P, **kwargs)
    for name, data in (("train", train_batch), ("test", test_batch))
  }


def auto_batch_size(
  metric_fn, path_fn, a_P, b_P, ts, batch, bends_P=None, memory_budget_bytes: int | None = None
) -> int:
  """How many points fit in the budget, from XLA's temp memory of one point."""
  if memory_budget_bytes is None:
    memory_budget_bytes = (
      CPU_MEMORY_BUDGET if jax.default_backend() == "cpu" else ACCELERATOR_MEMORY_BUDGET
    )
  first = lambda tree: None if tree is None else jax.tree.map(lambda x: x[0], tree)
  # Compiling one point costs about as much as a small evaluation: do it once
  # per function and shapes.
  key = (metric_fn, path_fn, _shapes_key((first(a_P), first(bends_P), batch)))
  if key not in _POINT_BYTES:
    _POINT_BYTES[key] = _point_bytes(
      metric_fn, path_fn, first(a_P), first(b_P), ts[0], first(bends_P), batch
    )
  return max(1, int(memory_budget_bytes // max(_POINT_BYTES[key], 1)))


_POINT_BYTES: dict = {}


def _point_bytes(metric_fn, path_fn, a, b, t, bends, batch) -> int:
  """XLA's temp memory of one point (its activations) plus its parameter copy."""

  def one_point(a, b, t, bends, data):
    return metric_fn(path_fn(a, b, t, bends), data)

  stats = jax.jit(one_point).lower(a, b, t, bends, batch).compile().memory_analysis()
  return (getattr(stats, "temp_size_in_bytes", 0) or 0) + _tree_bytes(a)


def _evaluate_impl(metric_fn, path_fn, batch_size, a_P, b_P, ts, batch, bends_P):
  num_pairs, num_ts = jax.tree.leaves(a_P)[0].shape[0], ts.shape[0]
  # One flat axis over (pair, t), so chunks are full whatever P and T are.
  pair_idx = jnp.repeat(jnp.arange(num_pairs), num_ts)
  t_flat = jnp.tile(ts, num_pairs)

  def one_point(args):
    i, t = args
    take = lambda tree: None if tree is None else jax.tree.map(lambda x: x[i], tree)
    return metric_fn(path_fn(take(a_P), take(b_P), t, take(bends_P)), batch)

  out = jax.lax.map(one_point, (pair_idx, t_flat), batch_size=batch_size)
  return jax.tree.map(lambda x: x.reshape((num_pairs, num_ts) + x.shape[1:]), out)


_evaluate = jax.jit(_evaluate_impl, static_argnums=(0, 1, 2))


def _num_pairs(a_P, b_P, bends_P) -> int:
  check_same_structure(a_P, b_P, ("a_P", "b_P"))
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(a_P)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
      f"Every endpoint leaf needs the same leading pair axis; got sizes {sorted(map(str, sizes))}."
    )
  num_pairs = sizes.pop()
  if bends_P is not None:
    lead = {jnp.shape(x)[0] for x in jax.tree.leaves(bends_P)}
    if lead != {num_pairs}:
      raise ValueError(f"bends_P needs a leading pair axis of {num_pairs}, got {lead}.")
    num_bends(jax.tree.map(lambda x: x[0], a_P), jax.tree.map(lambda x: x[0], bends_P))
  return num_pairs


def _shapes_key(tree):
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves)


def _tree_bytes(tree) -> int:
  return sum(
    int(np.prod(jnp.shape(x))) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
  )
