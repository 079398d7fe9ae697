"""Singular-value statistics of every weight matrix, at a point or along a path.

For a matrix W with singular values σ_1 ≥ … ≥ σ_r:

- σ_max = σ_1 (the spectral norm, Muon's constraint K* for K = nuclear);
- stable rank  ‖W‖_F² / σ_max² = Σσ_i² / σ_1²  (Rudelson & Vershynin 2007),
  in [1, rank W];
- effective rank exp(H(p)), p_i = σ_i / Σ_j σ_j, H(p) = −Σ p_i log p_i
  (Roy & Vetterli, "The effective rank: a measure of effective
  dimensionality", EUSIPCO 2007), in [1, rank W]; n for the n×n identity.

Matrix leaves are those of rank ≥ 2 (flax kernels (fan_in, fan_out)); leading
axes of a (..., m, n) leaf are batch axes and give per-matrix statistics of
shape (...). Results are dicts keyed by the leaf's path "hidden/kernel", so
they vmap, jit and plot directly.
"""

import jax
import jax.numpy as jnp

from analysis.paths import map_along_path
from training.metrics import leaf_name  # "hidden/kernel": the one leaf-name rule

STAT_NAMES = ("sigma_max", "stable_rank", "effective_rank")


def matrix_leaves(params) -> dict[str, jax.Array]:
  """The leaves of rank ≥ 2, by name."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  matrices = {leaf_name(path): x for path, x in flat if jnp.ndim(x) >= 2}
  if not matrices:
    raise ValueError("params has no matrix leaf (rank >= 2) to take a spectrum of.")
  return matrices


def singular_values(params) -> dict[str, jax.Array]:
  """σ (descending) of every matrix leaf, shape (..., min(m, n)), float32."""
  return {
    name: jnp.linalg.svd(x.astype(jnp.promote_types(x.dtype, jnp.float32)), compute_uv=False)
    for name, x in matrix_leaves(params).items()
  }


def spectrum_stats(sigma) -> dict[str, jax.Array]:
  """σ_max, stable rank and effective rank of singular values sigma (..., r)."""
  sigma = jnp.asarray(sigma)
  sigma_max = sigma.max(axis=-1)
  # A zero matrix has no spectrum to speak of: ranks are reported as 0.
  safe = lambda den: jnp.where(den > 0, den, 1.0)
  stable = jnp.where(sigma_max > 0, jnp.sum(sigma**2, -1) / safe(sigma_max**2), 0.0)
  total = jnp.sum(sigma, axis=-1, keepdims=True)
  p = sigma / safe(total)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)
  effective = jnp.where(sigma_max > 0, jnp.exp(entropy), 0.0)
  return {"sigma_max": sigma_max, "stable_rank": stable, "effective_rank": effective}


def spectral_stats(params) -> dict[str, dict[str, jax.Array]]:
  """{leaf name: {"sigma_max", "stable_rank", "effective_rank"}} of params."""
  return {name: spectrum_stats(s) for name, s in singular_values(params).items()}


def spectra_along_path(
  kind: str, a, b, ts, bends=None, batch_size: int = 1, extrapolate: bool = False
) -> dict[str, dict[str, jax.Array]]:
  """`spectral_stats` of φ(t) at every t of ts: leaves of shape (T, ...).

  One SVD per matrix and point, ``batch_size`` points at a time (batched SVD)."""
  return map_along_path(spectral_stats, kind, a, b, ts, bends, batch_size, extrapolate)


def spectra_along_paths(
  kind: str, a_P, b_P, ts, bends_P=None, batch_size: int = 1, extrapolate: bool = False
) -> dict[str, dict[str, jax.Array]]:
  """`spectra_along_path` for P pairs (leading pair axis): leaves (P, T, ...)."""
  along = lambda a, b, bends: spectra_along_path(kind, a, b, ts, bends, batch_size, extrapolate)
  return (
    jax.vmap(along)(a_P, b_P, bends_P)
    if bends_P is not None
    else jax.vmap(lambda a, b: along(a, b, None))(a_P, b_P)
  )
