"""The atlas's maps, as pure functions of solutions: the N×N barrier matrix, ball
membership, function distances, regions, and whether ball distance predicts
the cross barrier.

Notation: E entries (optimizer settings), S seeds each; solution (e, s) is
row e·S + s of the stacked params. Seed s of every entry starts from the same
initialization (configs/relu2.py), so seeds are the resampling unit of every
interval (analysis.stats: a cluster bootstrap over seeds); a seed that did
not converge is NaN in every table it enters.

The barrier of a pair is the linear (Entezari) barrier of the train loss along
the straight path after weight matching (`analysis.alignment`): the atlas's one
declared condition. Pair tables: T[e, f] is S×S, T[e, f][s, s'] the barrier
between (e, s) and (f, s'); T[e, e] is symmetric with a NaN diagonal.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.cluster.hierarchy as hierarchy
import scipy.spatial.distance as distance
import scipy.stats

from analysis import alignment, barriers, evaluate, spectra, stats


def index_pairs(num_entries: int, num_seeds: int) -> np.ndarray:
  """Every pair (i < j) of the E·S solutions, shape (P, 2)."""
  return evaluate.all_pairs(num_entries * num_seeds)


def aligned_barriers(metric, params_N, pairs_Px2, ts, batch) -> np.ndarray:
  """(P,) linear barriers of metric's loss on ``batch`` along each pair's straight
  path, b aligned to a; all P·T points in one chunked, vmapped call."""
  a_P, b_P = alignment.align_pairs(params_N, pairs_Px2)
  loss_fn = lambda p, batch: {"loss": metric(p, batch)["loss"]}
  along = evaluate.evaluate_paths(loss_fn, "linear", a_P, b_P, ts, batch)
  return np.asarray(barriers.loss_barrier(along["loss"], ts, kind="linear").height)


def barrier_timings(seconds: float, num_points: int, point_flops: float, matmul: float) -> dict:
  """The barrier evaluation's timing record: time per 1,000 path points and, with the FLOPs of
  one point (one loss evaluation, XLA's count) and the f32 matmul rate of the same run, the
  share of that rate it ran at."""
  return {
    "barriers": seconds,
    "path_points": int(num_points),
    "seconds_per_1000_points": 1000 * seconds / max(1, num_points),
    "flops_per_point": point_flops,
    "matmul_flops_per_s": matmul,
    "fraction_of_matmul_rate": point_flops * num_points / max(seconds, 1e-9) / matmul,
  }


def function_distances(apply_fn, params_N, pairs_Px2, x_BxD) -> np.ndarray:
  """(P,) RMS of f_a(x) − f_b(x) over the inputs x: the distance in function space
  (invariant to permutations, so it needs no alignment)."""
  out_NxBxO = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))(params_N, x_BxD)
  out = np.asarray(out_NxBxO)
  i, j = np.asarray(pairs_Px2).T
  return np.sqrt(np.mean((out[i] - out[j]) ** 2, axis=(1, 2)))


def pair_tables(values_P, pairs_Px2, num_entries: int, num_seeds: int, valid_N) -> dict:
  """{(e, f), e ≤ f: S×S table} of per-pair values; pairs with an invalid
  (unconverged) solution are NaN."""
  valid_N = np.asarray(valid_N, bool)
  tables = {
    (e, f): np.full((num_seeds, num_seeds), np.nan)
    for e, f in itertools.combinations_with_replacement(range(num_entries), 2)
  }
  for value, (i, j) in zip(np.asarray(values_P), np.asarray(pairs_Px2), strict=True):
    (e, s), (f, t) = divmod(int(i), num_seeds), divmod(int(j), num_seeds)
    v = value if valid_N[i] and valid_N[j] else np.nan
    tables[(e, f)][s, t] = v
    if e == f:
      tables[(e, f)][t, s] = v
  return tables


def matrix_with_intervals(tables: dict, num_entries: int, num_seeds: int, **boot) -> dict:
  """{"median", "ci_low", "ci_high", "n_pairs": E×E}: the seed median of every
  table and its seed-resampled 95% interval (same-entry on the diagonal)."""
  out = {k: np.full((num_entries, num_entries), np.nan) for k in ("median", "ci_low", "ci_high")}
  out["n_pairs"] = np.zeros((num_entries, num_entries), int)
  for (e, f), table in tables.items():
    same = e == f
    interval = stats.bootstrap(stats.seed_median(table, same), num_seeds, **boot)
    n = int(np.isfinite(table[np.triu_indices(num_seeds, 1)] if same else table).sum())
    for key, value in (
      ("median", interval["statistic"]),
      ("ci_low", interval["ci_low"]),
      ("ci_high", interval["ci_high"]),
      ("n_pairs", n),
    ):
      out[key][e, f] = out[key][f, e] = value
  return out


def excess_barrier(median_ExE: np.ndarray) -> np.ndarray:
  """max(0, B[e, f] − max(B[e, e], B[f, f])) off the diagonal, 0 on it: how much
  farther apart two entries' solutions are than each entry's own are."""
  m = np.asarray(median_ExE, dtype=np.float64)
  own = np.diag(m)
  out = np.maximum(0.0, m - np.maximum(own[:, None], own[None, :]))
  np.fill_diagonal(out, 0.0)
  return out


def regions(distance_ExE: np.ndarray, threshold: float) -> tuple[list[int], np.ndarray]:
  """(region label per entry, the average-linkage tree): entries whose average
  distance stays ≤ threshold are one region. NaN distances (no converged pair)
  count as infinitely far."""
  d = np.nan_to_num(np.asarray(distance_ExE, np.float64), nan=np.inf)
  d = np.minimum(np.maximum(d, d.T), 1e12)
  np.fill_diagonal(d, 0.0)
  if len(d) == 1:
    return [1], np.zeros((0, 4))
  tree = hierarchy.linkage(distance.squareform(d, checks=False), method="average")
  return hierarchy.fcluster(tree, t=threshold, criterion="distance").tolist(), tree


def spectrum_features(params_N, valid_N) -> tuple[np.ndarray, list[str]]:
  """(N×F) log σ_max, log stable rank, log effective rank of every matrix leaf
  (NaN rows for invalid solutions), and the feature names."""
  per = jax.vmap(spectra.spectral_stats)(params_N)
  names, cols = [], []
  for leaf in sorted(per):
    for stat in spectra.STAT_NAMES:
      names.append(f"{leaf}:{stat}")
      cols.append(np.log(np.maximum(np.asarray(per[leaf][stat], np.float64), 1e-12)))
  features = np.stack(cols, axis=1)
  features[~np.asarray(valid_N, bool)] = np.nan
  return features, names


def spectral_regions(features_NxF, num_entries: int, num_seeds: int, threshold: float = 1.0):
  """(region per entry, tree, E×E distances): entries clustered by the Euclidean
  distance between their seed-median standardized spectrum features."""
  f = np.asarray(features_NxF, np.float64).reshape(num_entries, num_seeds, -1)
  with np.errstate(all="ignore"):
    med = np.nanmedian(f, axis=1)
    scale = np.nanstd(med, axis=0)
  med = (med - np.nanmean(med, axis=0)) / np.where(scale > 0, scale, 1.0)
  d = np.sqrt(np.nansum((med[:, None] - med[None, :]) ** 2, axis=-1))
  d[np.isnan(med).all(axis=1)] = np.nan
  labels, tree = regions(d, threshold)
  return labels, tree, d


def ball_values(constraint_fns: list, params_N) -> np.ndarray:
  """(N, J): max over leaves of λ_j·K*_j(θ)/bound_j for every solution and every
  ball j (≤ 1: inside ball j). constraint_fns[j](params) -> that scalar."""
  return np.stack([np.asarray(jax.vmap(fn)(params_N)) for fn in constraint_fns], axis=1)


def membership_matrix(values_NxJ, num_entries: int, num_seeds: int, valid_N) -> np.ndarray:
  """E×J: the median over entry e's valid seeds of its solutions' ball-j values."""
  v = np.asarray(values_NxJ, np.float64).copy()
  v[~np.asarray(valid_N, bool)] = np.nan
  with np.errstate(all="ignore"):
    return np.nanmedian(v.reshape(num_entries, num_seeds, -1), axis=1)


def ball_distance_correlation(
  tables: dict,
  values_NxJ,
  ball_of_entry: list[int | None],
  pair_set: list[tuple[int, int]],
  num_seeds: int,
  level_N=None,
  **boot,
) -> dict:
  """Spearman ρ over the entry pairs (e, f) of ``pair_set`` between the ball
  distance d = max(λ_f·K*_f(θ_e), λ_e·K*_e(θ_f)) (seed medians; only the balls
  that exist: an entry without a ball contributes none) and the cross barrier
  (seed median of T[e, f]), recomputed on every seed resample. With ``level_N`` (a
  number per solution, e.g. its final loss) the partial Spearman ρ given the pair's level
  z = mean of the two entries' seed medians: whether the ball distance predicts the
  barrier beyond what both owe to how far training got."""
  v = np.asarray(values_NxJ, np.float64)
  num_entries = v.shape[0] // num_seeds
  v = v.reshape(num_entries, num_seeds, -1)
  meds = {p: stats.seed_median(tables[p], False) for p in pair_set}
  level = None if level_N is None else np.asarray(level_N, np.float64).reshape(num_entries, -1)

  def rows(draws):
    """Every resample row's ρ: the seed medians of all rows at once, then one Spearman per row."""
    xs, ys, zs = [], [], []
    for e, f in pair_set:
      parts = []  # [R] ball distances of this entry pair.
      if ball_of_entry[f] is not None:
        parts.append(stats.nanmedian(v[e][draws, ball_of_entry[f]], axis=1))
      if ball_of_entry[e] is not None:
        parts.append(stats.nanmedian(v[f][draws, ball_of_entry[e]], axis=1))
      x = parts[0] if parts else np.full(len(draws), np.nan)
      for part in parts[1:]:  # Python's max(x, part), NaNs included: part only if greater.
        x = np.where(part > x, part, x)
      xs.append(x)
      ys.append(meds[(e, f)].rows(draws))
      if level is not None:
        zs.append(
          (stats.nanmedian(level[e][draws], axis=1) + stats.nanmedian(level[f][draws], axis=1)) / 2
        )
    if not xs:  # No entry pair (e.g. fewer than two members): no ρ.
      return np.full(len(draws), np.nan)
    xs_RxP, ys_RxP = np.stack(xs, 1), np.stack(ys, 1)
    zs_RxP = np.stack(zs, 1) if zs else np.zeros_like(xs_RxP)
    out = np.full(len(draws), np.nan)
    for r, (x, y, z) in enumerate(zip(xs_RxP, ys_RxP, zs_RxP, strict=True)):
      ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
      if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
        if level is None:
          out[r] = scipy.stats.spearmanr(x[ok], y[ok]).statistic
        elif ok.sum() >= 4 and np.ptp(z[ok]) > 0:
          out[r] = partial_spearman(x[ok], y[ok], z[ok])
    return out

  interval = stats.bootstrap(stats.RowStatistic(rows), num_seeds, **boot)
  interval["n_entry_pairs"] = len(pair_set)
  return interval


def partial_spearman(x, y, z) -> float:
  """Spearman ρ of x and y given z: the correlation of the ranks' residuals after
  each is linearly regressed on z's ranks, (r_xy − r_xz·r_yz)/√((1 − r_xz²)(1 − r_yz²));
  NaN when z's ranks explain x's or y's entirely."""
  r = np.corrcoef(np.stack([scipy.stats.rankdata(a) for a in (x, y, z)]))
  denom = (1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2)
  return float((r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt(denom)) if denom > 1e-12 else np.nan


def to_lists(tree):
  """numpy → JSON-able lists (NaN stays NaN: json writes it as NaN)."""
  return jax.tree.map(lambda x: np.asarray(x).tolist() if hasattr(x, "shape") else x, tree)


def stack_params(params_list) -> dict:
  """Params of E runs, each (S, ...), stacked to (E·S, ...)."""
  return jax.tree.map(lambda *xs: jnp.concatenate([jnp.asarray(x) for x in xs], 0), *params_list)
