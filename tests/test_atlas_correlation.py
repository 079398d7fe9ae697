"""The atlas's hypothesis statistic: Spearman ρ of ball distance and cross barrier over
entry pairs, and its partial form given the endpoints' training level (analysis.atlas_maps)."""

import numpy as np
import pytest
import scipy.stats

from analysis import atlas_maps


def test_ball_distance_correlation_recovers_a_monotone_planted_relation():
  """Cross barriers that grow with the ball distance: ρ = 1 on every resample."""
  E, S = 4, 4
  rng = np.random.default_rng(0)
  # values[(e, s), j]: entry e's solutions measured in ball j; distance grows with |e − j|.
  values = np.array([[1.0 + abs(e - j) + 0.01 * rng.random() for j in range(E)] for e in range(E)])
  values_NxJ = np.repeat(values, S, axis=0)
  pairs = [(e, f) for e in range(E) for f in range(e + 1, E)]
  tables = {(e, f): np.full((S, S), 0.1 * (f - e) ** 2) for e, f in pairs}
  interval = atlas_maps.ball_distance_correlation(
    tables, values_NxJ, list(range(E)), pairs, S, n_resamples=50
  )
  assert interval["statistic"] > 0.8 and interval["ci_low"] > 0.8


def test_partial_spearman_known_answers():
  rng = np.random.default_rng(1)
  z = rng.normal(size=400)
  x, y = z + 0.5 * rng.normal(size=400), z + 0.5 * rng.normal(size=400)
  # Both follow z and nothing else: strongly correlated, not given z.
  assert scipy.stats.spearmanr(x, y).statistic > 0.6
  assert abs(atlas_maps.partial_spearman(x, y, z)) < 0.1
  # y follows x, z is unrelated: the partial ρ is the plain one.
  y2 = x + 0.05 * rng.normal(size=400)
  w = rng.normal(size=400)
  assert atlas_maps.partial_spearman(x, y2, w) > 0.95
  # The formula is the correlation of the rank residuals after regressing on z's ranks.
  rx, ry, rz = (scipy.stats.rankdata(a) for a in (x, y, z))
  resid = [a - np.polyval(np.polyfit(rz, a, 1), rz) for a in (rx, ry)]
  assert atlas_maps.partial_spearman(x, y, z) == pytest.approx(np.corrcoef(*resid)[0, 1], abs=1e-12)
  assert np.isnan(atlas_maps.partial_spearman(x, z, z))  # z explains x entirely.


def test_ball_distance_correlation_given_level():
  """A genuine relation survives the control; a relation made by the training level alone
  vanishes under it."""
  E, S = 7, 4
  rng = np.random.default_rng(2)
  pairs = [(e, f) for e in range(E) for f in range(e + 1, E)]
  # Genuine: barriers grow with the ball distance |e − f|; levels are unrelated noise.
  values = np.array([[1.0 + abs(e - j) + 0.01 * rng.random() for j in range(E)] for e in range(E)])
  tables = {(e, f): np.full((S, S), 0.1 * (f - e) ** 2) for e, f in pairs}
  level_N = rng.random(E * S)
  genuine = atlas_maps.ball_distance_correlation(
    tables, np.repeat(values, S, axis=0), list(range(E)), pairs, S, level_N, n_resamples=50
  )
  assert genuine["statistic"] > 0.8
  # Made by the level: both the barrier and the ball distance follow the entries' levels.
  level_E = rng.random(E)
  values = 1.0 + level_E[:, None] + level_E[None, :]  # d(e, f) = 1 + L_e + L_f
  tables = {(e, f): np.full((S, S), level_E[e] + level_E[f]) for e, f in pairs}
  plain = atlas_maps.ball_distance_correlation(
    tables, np.repeat(values, S, axis=0), list(range(E)), pairs, S, n_resamples=50
  )
  given = atlas_maps.ball_distance_correlation(
    tables,
    np.repeat(values, S, axis=0),
    list(range(E)),
    pairs,
    S,
    np.repeat(level_E, S),
    n_resamples=50,
  )
  assert plain["statistic"] > 0.99  # Spurious: both are the level.
  none = atlas_maps.ball_distance_correlation(
    tables, np.repeat(values, S, axis=0), list(range(E)), [], S, n_resamples=10
  )
  assert np.isnan(none["statistic"])  # No entry pair (one member): no ρ, no crash.
  assert np.isnan(given["statistic"])  # Nothing left once the level is known: no verdict.
