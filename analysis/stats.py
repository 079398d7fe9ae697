"""Seed-resampled intervals and verdicts: the statistics every experiment's claims use.

Runs of one experiment share seeds: seed s of AdamW and seed s of Muon start
from the same initialization and see the same data, and one endpoint enters
every pair it belongs to. Pairs are therefore not independent draws, and an
interval computed over pairs is too narrow. The unit of resampling is the
seed (a cluster bootstrap): draw n seeds with replacement, keep every pair
whose two endpoints' seeds were drawn (with multiplicity), recompute the
statistic. A same-optimizer pair needs two different draws: a seed drawn
twice gives no pair with itself (its barrier would be 0 by construction).

`bootstrap` is the engine: any statistic of a seed-index vector. The pair
helpers build the usual statistics of barrier tables (`seed_median`, the
default, and `pair_median`; `ratio_of_medians`, `trend_slope`) as such functions, and `verdict` turns an
interval into held / did not hold / inconclusive by the rule declared below,
never by the point estimate alone.

Percentile intervals (Efron & Tibshirani 1993, ch. 13) at 95% by default;
the coverage test in tests/test_stats.py checks them in simulation.
"""

import warnings
from collections.abc import Callable, Mapping

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
# Fewer seeds than this give no interval: 2 seeds have 3 distinct resamples,
# whose "percentiles" say nothing about the population.
MIN_SEEDS = 3
VERDICT_KEYS = (
  "claim",
  "verdict",
  "statistic",
  "ci_low",
  "ci_high",
  "n_seeds",
  "n_pairs_used",
  "n_pairs_excluded",
  "condition",
  "width",
)


def resample_indices(n_seeds: int, n_resamples: int, seed: int = 0) -> np.ndarray:
  """[R, n] seed indices drawn with replacement; row 0 is the identity (the point estimate)."""
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, n_seeds, size=(n_resamples + 1, n_seeds))
  draws[0] = np.arange(n_seeds)
  return draws


class RowStatistic:
  """A statistic of a seed-index vector that also takes every resample row at once:
  ``rows(draws [R, n]) -> [R]``, vectorized over R (`bootstrap` calls it instead of R
  Python calls: with it the relu2 atlas's rerun went from 143 s to 83 s)."""

  def __init__(self, rows: Callable[[np.ndarray], np.ndarray]):
    self.rows = rows

  def __call__(self, idx: np.ndarray) -> float:
    return float(self.rows(np.asarray(idx)[None])[0])


def nanmedian(x, axis):
  """np.nanmedian, NaN (without a warning) where a slice has no value."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmedian(x, axis=axis)


def _finite_or_nan(table) -> np.ndarray:
  t = np.asarray(table, dtype=np.float64)
  return np.where(np.isfinite(t), t, np.nan)


def bootstrap(
  statistic: Callable[[np.ndarray], float],
  n_seeds: int,
  n_resamples: int = 2000,
  level: float = 0.95,
  seed: int = 0,
) -> dict:
  """{"statistic", "ci_low", "ci_high", "n_resamples"}: statistic(arange(n)) and its
  percentile interval over seed resamples. Resamples where the statistic is
  undefined (NaN: e.g. no pair left) are dropped and counted in "n_undefined";
  an interval from fewer than half the resamples, or from fewer than MIN_SEEDS
  seeds, or around an undefined point estimate (a ratio whose observed denominator
  is ≤ 0: the resamples that happen to define it say nothing about the data), is
  reported as NaN (its verdict: inconclusive)."""
  draws = resample_indices(n_seeds, n_resamples, seed)
  if isinstance(statistic, RowStatistic):
    values = np.asarray(statistic.rows(draws), dtype=np.float64)
  else:
    values = np.array([statistic(idx) for idx in draws], dtype=np.float64)
  point, rest = values[0], values[1:]
  finite = rest[np.isfinite(rest)]
  alpha = (1.0 - level) / 2
  if not np.isfinite(point) or n_seeds < MIN_SEEDS or finite.size < max(1, n_resamples // 2):
    low = high = float("nan")
  else:
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
  return {
    "statistic": float(point),
    "ci_low": float(low),
    "ci_high": float(high),
    "n_resamples": int(n_resamples),
    "n_undefined": int(rest.size - finite.size),
  }


def pair_values(table_SxS: np.ndarray, idx: np.ndarray, same: bool) -> np.ndarray:
  """The pair values of one resample: table[idx_a, idx_b] for every pair of draws
  (a < b for a same-optimizer table, all (a, b) for a cross one), without pairs
  of a seed with itself in a same-optimizer table and without NaN (excluded) entries.

  table_SxS[i, j] is the value of the pair (seed i of the first optimizer, seed j
  of the second); for a same-optimizer table it is symmetric and its diagonal unused.
  """
  sub = np.asarray(table_SxS, dtype=np.float64)[np.ix_(idx, idx)]
  if same:
    a, b = np.triu_indices(len(idx), k=1)
    keep = idx[a] != idx[b]
    values = sub[a[keep], b[keep]]
  else:
    values = sub.ravel()
  return values[np.isfinite(values)]


def pair_median(table_SxS: np.ndarray, same: bool) -> RowStatistic:
  """The median over a resample's pairs, `pair_values` (NaN when none is left)."""
  table = _finite_or_nan(table_SxS)

  def rows(draws):
    sub = table[draws[:, :, None], draws[:, None, :]]  # [R, n, n]
    if not same:
      return nanmedian(sub.reshape(len(draws), -1), axis=1)
    a, b = np.triu_indices(draws.shape[1], k=1)
    values = np.where(draws[:, a] != draws[:, b], sub[:, a, b], np.nan)
    return nanmedian(values, axis=1)

  return RowStatistic(rows)


def seed_median(table_SxS: np.ndarray, same: bool) -> Callable[[np.ndarray], float]:
  """The median over the drawn seeds of each seed's median pair value (its pairs with
  the other draws: row and column of a cross table). Robust to one bad seed: a seed
  is in n−1 of the n(n−1)/2 same-optimizer pairs, so a resample that draws an
  outlier seed 3 times out of 8 already gives it most pairs and moves
  `pair_median`, while this one moves only when about half the draws are that
  seed (tests/test_stats.py: one outlier in 10 seeds). NaN when no seed has a pair."""
  table = _finite_or_nan(table_SxS)

  def rows(draws):
    sub = table[draws[:, :, None], draws[:, None, :]]  # [R, n, n]: drawn seed a, b
    if same:  # Seed a's pairs: every other draw of a different seed.
      values = np.where(draws[:, :, None] != draws[:, None, :], sub, np.nan)
    else:  # Seed a's pairs: its row (first optimizer) and its column (second).
      values = np.concatenate([sub, np.swapaxes(sub, 1, 2)], axis=2)
    return nanmedian(nanmedian(values, axis=2), axis=1)

  return RowStatistic(rows)


def ratio_of_medians(
  numerator: tuple[np.ndarray, bool],
  denominators: list[tuple[np.ndarray, bool]],
  summary: Callable = seed_median,
) -> Callable[[np.ndarray], float]:
  """summary(numerator) / max over denominators of summary(each), all from the same
  seed draw (so the comparison is paired by seed). Each argument is (table_SxS,
  same); summary is `seed_median` (default) or `pair_median`. NaN when a summary is
  undefined or the denominator is ≤ 0."""
  num = summary(*numerator)
  dens = [summary(*d) for d in denominators]

  def statistic(idx):
    top, bottom = num(idx), max(d(idx) for d in dens)
    if not (np.isfinite(top) and np.isfinite(bottom)) or bottom <= 0:
      return float("nan")
    return top / bottom

  return statistic


def trend_slope(
  xs: np.ndarray, tables: list[np.ndarray], same: bool, floor: float, summary: Callable = None
) -> Callable[[np.ndarray], float]:
  """The least-squares slope of log(max(summary barrier, floor)) against log(x)
  over the widths xs (one table per width, seeds shared across widths, so one
  draw resamples every width alike). Negative: the barrier decreases with x.
  floor (> 0) keeps barriers at or below 0 from dominating the log."""
  log_x = np.log(np.asarray(xs, dtype=np.float64))
  medians = [(summary or seed_median)(t, same) for t in tables]

  def statistic(idx):
    ys = np.array([m(idx) for m in medians])
    ok = np.isfinite(ys)
    if ok.sum() < 2:
      return float("nan")
    ys = np.log(np.maximum(ys[ok], floor))
    return float(np.polyfit(log_x[ok], ys, 1)[0])

  return statistic


def verdict(interval: Mapping, null: float, direction: str, n_pairs_used: int, min_pairs: int):
  """held / did not hold / inconclusive from an interval, by the declared rule:

  direction "greater": held when ci_low > null; did not hold when ci_high < null.
  direction "less": held when ci_high < null; did not hold when ci_low > null.
  Otherwise (the interval contains the null), or when fewer than min_pairs
  pairs were used or the interval is undefined: inconclusive.
  """
  low, high = interval["ci_low"], interval["ci_high"]
  if n_pairs_used < min_pairs or not (np.isfinite(low) and np.isfinite(high)):
    return INCONCLUSIVE
  if direction == "greater":
    return HELD if low > null else NOT_HELD if high < null else INCONCLUSIVE
  if direction == "less":
    return HELD if high < null else NOT_HELD if low > null else INCONCLUSIVE
  raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")


def verdict_record(
  claim: str,
  interval: Mapping,
  null: float,
  direction: str,
  *,
  n_seeds: int,
  n_pairs_used: int,
  n_pairs_excluded: int,
  condition: str,
  width: int | None,
  min_pairs: int,
  **extra,
) -> dict:
  """The machine-readable verdict of one claim (keys VERDICT_KEYS, then "null",
  "direction" and any extra fields)."""
  record = {
    "claim": claim,
    "verdict": verdict(interval, null, direction, n_pairs_used, min_pairs),
    "statistic": interval["statistic"],
    "ci_low": interval["ci_low"],
    "ci_high": interval["ci_high"],
    "n_seeds": int(n_seeds),
    "n_pairs_used": int(n_pairs_used),
    "n_pairs_excluded": int(n_pairs_excluded),
    "condition": condition,
    "width": width,
    "null": null,
    "direction": direction,
  }
  record.update(extra)
  return record


def describe(record: Mapping) -> str:
  """One sentence: the claim, the verdict, the statistic with its interval and the counts."""
  where = f" at width {record['width']}" if record.get("width") is not None else ""
  side = ">" if record["direction"] == "greater" else "<"
  return (
    f"{record['claim']}{where}: {record['verdict'].upper()} — statistic {record['statistic']:.3g}, "
    f"95% interval [{record['ci_low']:.3g}, {record['ci_high']:.3g}] (held needs the interval "
    f"{side} {record['null']:.3g}); condition {record['condition']}, {record['n_seeds']} seeds, "
    f"{record['n_pairs_used']} pairs used, {record['n_pairs_excluded']} excluded."
  )


def paired_difference(a_S: np.ndarray, b_S: np.ndarray) -> Callable[[np.ndarray], float]:
  """mean(a − b) over a resample of seeds, for two arms run on the same seeds
  (NaN entries, e.g. unconverged runs, dropped pairwise)."""
  diff = np.asarray(a_S, dtype=np.float64) - np.asarray(b_S, dtype=np.float64)

  def statistic(idx):
    values = diff[idx]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")

  return statistic
