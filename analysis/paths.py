"""Paths between two parameter pytrees: lines, polygonal chains, Bézier curves.

Every path here is a weighted sum of control points P_0 = a, P_1..P_k = the
bends, P_{k+1} = b, with weights w_j(t) that sum to 1 on [0, 1]:

    φ(t) = Σ_j w_j(t)·P_j

- "linear":    w = (1 − t, t) (no bends). Extrapolation outside [0, 1] is
  allowed on request (``extrapolate=True``): φ(t) = a + t·(b − a).
- "polychain": the k + 1 straight segments a → P_1 → … → P_k → b, segment j on
  t ∈ [j/(k+1), (j+1)/(k+1)]: w_j(t) = max(0, 1 − |(k+1)·t − j|) (hat
  functions). With k = 1 this is Garipov et al.'s polygonal chain
  φ(t) = 2(t·θ + (0.5 − t)·a) on [0, ½], 2((t − 0.5)·b + (1 − t)·θ) on [½, 1].
- "bezier":    the degree-(k+1) Bézier curve, w_j(t) = C(k+1, j)·t^j·(1 − t)^(k+1−j)
  (Bernstein basis). k = 1: (1 − t)²·a + 2t(1 − t)·θ + t²·b.

Garipov, Izmailov, Podoprikhin, Vetrov, Wilson, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018 (arXiv:1802.10026).

The weights are nonnegative on [0, 1], so φ(t) lies in the convex hull of the
control points: any convex set (a norm ball) that holds them holds the path.

Conventions: a and b are pytrees of the same structure and shapes; ``bends``
is that pytree with a leading bend axis of size k on every leaf (None or k = 0
for a straight line). t is a scalar; everything is jit- and vmap-friendly. The
range of t is checked when t is concrete (outside jit); under jit it cannot be.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from training.metrics import leaf_name

PATH_KINDS = ("linear", "polychain", "bezier")

# (a, b, t, bends) -> params; what `get_path_fn` returns and evaluators call.
PathFn = Callable[[Any, Any, jax.Array, Any | None], Any]


def check_same_structure(a, b, names=("a", "b")) -> None:
  """Raises ValueError unless a and b have the same tree structure and leaf shapes."""
  tree_a, tree_b = jax.tree.structure(a), jax.tree.structure(b)
  if tree_a != tree_b:
    raise ValueError(
      f"{names[0]} and {names[1]} have different pytree structures: {tree_a} vs {tree_b}."
    )
  for path, x, y in zip(_leaf_names(a), jax.tree.leaves(a), jax.tree.leaves(b)):
    if jnp.shape(x) != jnp.shape(y):
      raise ValueError(
        f"Leaf {path} has shape {jnp.shape(x)} in {names[0]} but {jnp.shape(y)} in {names[1]}."
      )


def num_bends(a, bends) -> int:
  """k, the size of the leading bend axis of every leaf (0 for None); checks shapes."""
  if bends is None:
    return 0
  if jax.tree.structure(bends) != jax.tree.structure(a):
    raise ValueError(
      f"bends must have the structure of the endpoints: "
      f"{jax.tree.structure(bends)} vs {jax.tree.structure(a)}."
    )
  sizes = set()
  for path, x, p in zip(_leaf_names(a), jax.tree.leaves(a), jax.tree.leaves(bends)):
    if jnp.shape(p)[1:] != jnp.shape(x):
      raise ValueError(
        f"bends leaf {path} has shape {jnp.shape(p)}; expected (num_bends, *{jnp.shape(x)})."
      )
    sizes.add(jnp.shape(p)[0])
  if len(sizes) != 1:
    raise ValueError(f"bends leaves disagree on the number of bends: {sorted(sizes)}.")
  return sizes.pop()


def check_t(t, allow_outside: bool = False) -> None:
  """Raises ValueError if a concrete t lies outside [0, 1] and that is not allowed."""
  if allow_outside or isinstance(t, jax.core.Tracer):
    return
  t = np.asarray(t)
  if t.size and (not np.all(np.isfinite(t)) or t.min() < 0.0 or t.max() > 1.0):
    raise ValueError(
      f"t must lie in [0, 1] (got range [{t.min()}, {t.max()}]); "
      "only the linear path extrapolates, with extrapolate=True."
    )


def path_weights(kind: str, k: int, t) -> jax.Array:
  """w(t), shape t.shape + (k + 2,): the weight of each control point a, bends, b."""
  t = jnp.asarray(t, jnp.float32)[..., None]
  j = jnp.arange(k + 2, dtype=jnp.float32)
  if kind == "linear":
    if k != 0:
      raise ValueError(f"The linear path takes no bends, got {k}.")
    return jnp.concatenate([1.0 - t, t], axis=-1)
  if kind == "polychain":
    return jnp.maximum(0.0, 1.0 - jnp.abs((k + 1) * t - j))
  if kind == "bezier":
    n = k + 1
    binom = jnp.asarray([math.comb(n, i) for i in range(n + 1)], jnp.float32)
    # t**0 = 1 also at t = 0 (jnp.power(0., 0.) is 1), so the endpoints are exact.
    return binom * jnp.power(t, j) * jnp.power(1.0 - t, n - j)
  raise ValueError(f"Unknown path kind {kind!r}; known: {PATH_KINDS}.")


def path_point(kind: str, a, b, t, bends=None, extrapolate: bool = False):
  """φ(t) of the path ``kind`` from a to b through ``bends`` (module docstring)."""
  if kind not in PATH_KINDS:
    raise ValueError(f"Unknown path kind {kind!r}; known: {PATH_KINDS}.")
  if extrapolate and kind != "linear":
    raise ValueError(f"Only the linear path extrapolates, not {kind!r}.")
  check_same_structure(a, b)
  k = num_bends(a, bends)
  check_t(t, allow_outside=extrapolate)
  if jnp.ndim(t) != 0:
    raise ValueError(
      f"path_point takes a scalar t, got shape {jnp.shape(t)}; "
      "vmap over t, or use interpolate_points."
    )
  w = path_weights(kind, k, t)

  def leaf(x, y, p=None):
    wx = w.astype(jnp.result_type(x, jnp.float32))
    out = wx[0] * x + wx[-1] * y
    if p is not None:
      out = out + jnp.tensordot(wx[1:-1], p, axes=1)
    return out.astype(jnp.result_type(x))

  if bends is None:
    return jax.tree.map(leaf, a, b)
  return jax.tree.map(leaf, a, b, bends)


def linear_path(a, b, t, extrapolate: bool = False):
  """(1 − t)·a + t·b; t outside [0, 1] only with ``extrapolate``."""
  return path_point("linear", a, b, t, extrapolate=extrapolate)


def polychain_path(a, b, bends, t):
  """The polygonal chain a → bends[0] → … → bends[k−1] → b at t ∈ [0, 1]."""
  return path_point("polychain", a, b, t, bends)


def bezier_path(a, b, bends, t):
  """The Bézier curve with control points a, bends[0..k−1], b at t ∈ [0, 1]."""
  return path_point("bezier", a, b, t, bends)


def get_path_fn(path, extrapolate: bool = False) -> PathFn:
  """A kind name becomes ``(a, b, t, bends) -> params``; a callable passes through."""
  if callable(path):
    return path
  if path not in PATH_KINDS:
    raise ValueError(f"Unknown path kind {path!r}; known: {PATH_KINDS}.")
  return _kind_path_fn(path, extrapolate)


@functools.cache
def _kind_path_fn(kind: str, extrapolate: bool) -> PathFn:
  # One function object per kind: jitted evaluators take it as a static
  # argument, and a fresh lambda per call would recompile every time.
  return lambda a, b, t, bends=None: path_point(kind, a, b, t, bends, extrapolate)


def interpolate_points(kind: str, a, b, ts, bends=None, extrapolate: bool = False):
  """φ at every t of the 1-D ``ts``: the pytree with a leading axis of len(ts).

  All points at once (one einsum per leaf), so memory grows with len(ts); for
  large models map over t in chunks instead (`map_along_path`)."""
  ts = jnp.asarray(ts)
  if ts.ndim != 1:
    raise ValueError(f"ts must be 1-D, got shape {ts.shape}.")
  return jax.vmap(lambda t: path_point(kind, a, b, t, bends, extrapolate))(
    _checked_ts(ts, extrapolate and kind == "linear")
  )


def map_along_path(
  fn, kind: str, a, b, ts, bends=None, batch_size: int = 1, extrapolate: bool = False
):
  """fn(φ(t)) for every t of ``ts``, ``batch_size`` points at a time
  (`jax.lax.map`), so only that many parameter copies exist at once."""
  ts = jnp.asarray(ts)
  if ts.ndim != 1:
    raise ValueError(f"ts must be 1-D, got shape {ts.shape}.")
  ts = _checked_ts(ts, extrapolate and kind == "linear")
  return jax.lax.map(
    lambda t: fn(path_point(kind, a, b, t, bends, extrapolate)), ts, batch_size=batch_size
  )


def initial_bends(a, b, k: int):
  """k bends evenly spaced on the segment: P_j = a + j/(k+1)·(b − a), stacked.

  With these bends every path kind is exactly the linear path, t for t (the
  Bernstein basis reproduces linear functions: Σ_j (j/n)·B_{j,n}(t) = t), the
  usual start for curve fitting (Garipov et al. 2018)."""
  check_same_structure(a, b)
  if k < 1:
    raise ValueError(f"initial_bends needs k >= 1, got {k}.")
  s = jnp.arange(1, k + 1, dtype=jnp.float32) / (k + 1)
  return jax.tree.map(
    lambda x, y: (x[None] + s.reshape((k,) + (1,) * jnp.ndim(x)) * (y - x)[None]).astype(
      jnp.result_type(x)
    ),
    a,
    b,
  )


def _checked_ts(ts, allow_outside):
  check_t(ts, allow_outside)
  return ts


def _leaf_names(tree) -> list[str]:
  return [leaf_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
