"""analysis.stats on tables whose answer is known: the verdicts of clearly
separated, identical and outlier-seed barrier tables, the resampling of seeds
(not pairs), and the intervals' coverage in simulation."""

import numpy as np
import pytest

from analysis import stats


def _same_table(values_S: np.ndarray, rng, noise: float) -> np.ndarray:
  """A symmetric same-optimizer table: pair (i, j) = (v_i + v_j)/2 + noise."""
  n = len(values_S)
  e = rng.normal(0, noise, (n, n))
  table = (values_S[:, None] + values_S[None, :]) / 2 + (e + e.T) / 2
  np.fill_diagonal(table, np.nan)
  return table


def test_resample_row_zero_is_the_identity():
  draws = stats.resample_indices(5, 10, seed=3)
  assert draws.shape == (11, 5)
  np.testing.assert_array_equal(draws[0], np.arange(5))


def test_pair_values_drop_self_pairs_and_excluded_entries():
  table = np.arange(16.0).reshape(4, 4)
  table = (table + table.T) / 2
  table[1, 2] = table[2, 1] = np.nan  # an excluded pair
  idx = np.array([0, 0, 1, 2])  # seed 0 drawn twice: no (0, 0) pair
  same = stats.pair_values(table, idx, same=True)
  # pairs of draws: (0,1)x2, (0,2)x2, (1,2) excluded; (0,0) dropped.
  np.testing.assert_allclose(np.sort(same), np.sort([table[0, 1]] * 2 + [table[0, 2]] * 2))
  cross = stats.pair_values(np.ones((4, 4)), idx, same=False)
  assert cross.size == 16  # every (a, b) of the draw, self seeds included


def test_separated_tables_give_held_and_identical_give_inconclusive():
  rng = np.random.default_rng(0)
  n = 8
  same_a = _same_table(rng.normal(0.01, 0.002, n), rng, 0.001)
  same_b = _same_table(rng.normal(0.012, 0.002, n), rng, 0.001)
  cross_far = rng.normal(0.05, 0.004, (n, n))
  cross_equal = rng.normal(0.012, 0.002, (n, n))
  for cross, expected in ((cross_far, stats.HELD), (cross_equal, stats.INCONCLUSIVE)):
    ratio = stats.ratio_of_medians((cross, False), [(same_a, True), (same_b, True)])
    interval = stats.bootstrap(ratio, n, n_resamples=1000)
    record = stats.verdict_record(
      "cross > same",
      interval,
      1.0,
      "greater",
      n_seeds=n,
      n_pairs_used=n * n,
      n_pairs_excluded=0,
      condition="linear+align",
      width=4,
      min_pairs=6,
    )
    assert record["verdict"] == expected, (record, expected)
    assert set(stats.VERDICT_KEYS) <= set(record)
  # Cross clearly below same: the claim "cross > same" did not hold.
  ratio = stats.ratio_of_medians((cross_far / 50, False), [(same_a, True), (same_b, True)])
  assert stats.verdict(stats.bootstrap(ratio, n), 1.0, "greater", 64, 6) == stats.NOT_HELD


def test_one_outlier_seed_does_not_decide_the_median_verdict():
  """One seed of 10 whose pairs are 500x the rest: the median of seed medians keeps
  its interval below the tolerance (held "≈ 0"); the plain pair median and the
  mean are moved by resamples that draw that seed 3+ times (inconclusive), which
  is why `seed_median` is the default summary."""
  rng = np.random.default_rng(1)
  n = 10
  values = rng.normal(0.001, 0.0002, n)
  values[3] = 0.5
  table = _same_table(values, rng, 0.0)
  table[3, :] = table[:, 3] = 0.5
  tol = 0.01
  robust = stats.bootstrap(stats.seed_median(table, same=True), n, n_resamples=1000)
  assert stats.verdict(robust, tol, "less", 45, 6) == stats.HELD
  plain = stats.bootstrap(stats.pair_median(table, same=True), n, n_resamples=1000)
  assert stats.verdict(plain, tol, "less", 45, 6) == stats.INCONCLUSIVE

  def mean(idx):
    return float(stats.pair_values(table, idx, True).mean())

  assert (
    stats.verdict(stats.bootstrap(mean, n, n_resamples=1000), tol, "less", 45, 6)
    == stats.INCONCLUSIVE
  )


def test_too_few_pairs_or_seeds_is_inconclusive():
  interval = {"statistic": 3.0, "ci_low": 2.0, "ci_high": 4.0}
  assert stats.verdict(interval, 1.0, "greater", n_pairs_used=2, min_pairs=3) == "inconclusive"
  for n in (1, 2):  # no interval from one or two seeds, however large the effect
    few = stats.bootstrap(lambda idx: 1.0, n_seeds=n)
    assert np.isnan(few["ci_low"]) and few["statistic"] == 1.0
    assert stats.verdict(few, 0.0, "greater", 10, 3) == "inconclusive"
  with pytest.raises(ValueError, match="direction"):
    stats.verdict(interval, 1.0, "sideways", 10, 3)
  # An undefined estimate (the :full sweep's AdamW–Muon ratio at width 4, whose observed
  # same-optimizer median is ≤ 0) gets no interval, though resamples that drop the
  # offending seeds define one: those would describe other data than the observed.
  undefined_here = lambda idx: float("nan") if np.array_equal(idx, np.arange(8)) else 1.5
  out = stats.bootstrap(undefined_here, n_seeds=8, n_resamples=200)
  assert np.isnan(out["statistic"]) and np.isnan(out["ci_low"]) and np.isnan(out["ci_high"])
  assert stats.verdict(out, 1.0, "greater", 28, 3) == "inconclusive"


def test_trend_slope_recovers_a_power_law_and_its_sign():
  widths = np.array([4, 16, 64, 256])
  rng = np.random.default_rng(2)
  tables = [_same_table(np.full(6, 0.1 * w**-0.5), rng, 1e-4 * w**-0.5) for w in widths]
  interval = stats.bootstrap(stats.trend_slope(widths, tables, True, floor=1e-9), 6)
  assert interval["statistic"] == pytest.approx(-0.5, abs=0.02)
  assert stats.verdict(interval, 0.0, "less", 60, 6) == stats.HELD


def test_cluster_bootstrap_covers_at_about_the_nominal_rate():
  """Pair (i, j) = a_i + b_j with seed effects a, b ~ N(0, 1): the population median
  of the pair values is 0. The seed bootstrap covers 0 at about 95%; resampling
  pairs as if independent is too narrow (it ignores that pairs share seeds)."""
  rng = np.random.default_rng(4)
  n, sims, resamples = 10, 150, 400
  cover_seed = cover_pairs = 0
  for k in range(sims):
    table = rng.normal(size=n)[:, None] + rng.normal(size=n)[None, :]
    interval = stats.bootstrap(stats.pair_median(table, False), n, resamples, seed=k)
    cover_seed += interval["ci_low"] <= 0.0 <= interval["ci_high"]
    flat = table.ravel()
    medians = np.median(rng.choice(flat, size=(resamples, flat.size)), axis=1)
    low, high = np.quantile(medians, [0.025, 0.975])
    cover_pairs += low <= 0.0 <= high
  assert 0.85 <= cover_seed / sims <= 0.995, cover_seed / sims
  assert cover_pairs / sims < cover_seed / sims - 0.15, (cover_pairs, cover_seed)


def test_paired_difference_and_describe():
  a = np.array([1.0, 2.0, 3.0, np.nan])
  b = np.array([0.5, 1.5, 2.5, 1.0])
  interval = stats.bootstrap(stats.paired_difference(a, b), 4, n_resamples=200)
  assert interval["statistic"] == pytest.approx(0.5)
  assert interval["ci_low"] == pytest.approx(0.5) and interval["ci_high"] == pytest.approx(0.5)
  record = stats.verdict_record(
    "Nexus lowers OOD loss",
    interval,
    0.0,
    "greater",
    n_seeds=4,
    n_pairs_used=3,
    n_pairs_excluded=1,
    condition="ood",
    width=None,
    min_pairs=3,
  )
  line = stats.describe(record)
  assert "HELD" in line and "[0.5, 0.5]" in line and "1 excluded" in line


def reference_seed_median(table, idx, same):
  """The per-resample loop `stats.seed_median` replaced (a plain transcription)."""
  sub = np.asarray(table, np.float64)[np.ix_(idx, idx)]
  per_seed = []
  for a in range(len(idx)):
    values = sub[a][idx != idx[a]] if same else np.concatenate([sub[a], sub[:, a]])
    values = values[np.isfinite(values)]
    if values.size:
      per_seed.append(np.median(values))
  return float(np.median(per_seed)) if per_seed else float("nan")


def reference_pair_median(table, idx, same):
  values = stats.pair_values(table, idx, same)
  return float(np.median(values)) if values.size else float("nan")


@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("n", [4, 5, 8])
def test_row_statistics_equal_the_per_resample_loop(same, n):
  """All resample rows at once give, row by row, what the loop over rows gives: tables
  with NaN (excluded) and inf entries, a seed with no finite pair, repeated draws."""
  rng = np.random.default_rng(n)
  table = rng.lognormal(size=(n, n))
  table[rng.random((n, n)) < 0.1] = np.nan
  table[0, 1] = np.inf
  table[n - 1, :] = table[:, n - 1] = np.nan  # The last seed has no pair at all.
  if same:
    table = np.where(np.isnan(table) | np.isnan(table.T), np.nan, (table + table.T) / 2)
  draws = stats.resample_indices(n, 300, seed=n)
  draws = np.vstack([draws, np.full(n, n - 1)])  # Only the pairless seed: undefined (NaN).
  for make, reference in (
    (stats.seed_median, reference_seed_median),
    (stats.pair_median, reference_pair_median),
  ):
    got = make(table, same).rows(draws)
    want = np.array([reference(table, d, same) for d in draws])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-12)
    assert np.isnan(want[-1]) and np.isfinite(want).sum() > 100  # Both kinds of row occur.
    assert make(table, same)(draws[1]) == pytest.approx(want[1], nan_ok=True)
