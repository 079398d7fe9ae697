"""The sweep's claims, decided on seed-resampled intervals (pure numpy).

Input: barrier tables ``tables[width][condition][group]``, each S×S with
T[i, j] the barrier between seed i of the group's first optimizer and seed j
of its second (a same-optimizer table is symmetric, its diagonal unused), NaN
where a pair was excluded (an unconverged end). Seed i is the same
initialization at every width and for every optimizer, so one seed draw
resamples every table alike (`analysis.stats`, a cluster bootstrap).

Claims, every one decided on the declared primary condition (the others are
computed the same way and reported as secondary, never used to decide):

- "a_zero" per optimizer o: at the large width, the seed median of the o-o
  barrier is ≈ 0 (interval below ``tol``);
- "a_trend" per optimizer o: the o-o barrier decreases with width (the
  log-log slope's interval below 0);
- "b": at the small width, the cross barrier (``cross_pair``) exceeds the
  larger of its two same-optimizer barriers (ratio of seed medians, interval
  above 1);
- "cross" per width and per cross pair: the same ratio, the per-width view
  of (b) the plots draw against width.
"""

import itertools

import numpy as np

from analysis import stats


def group_name(a: str, b: str) -> str:
  """ "adamw-muon": two optimizers, sorted (as analysis.connectivity_report names them)."""
  return "-".join(sorted((a, b)))


def is_same(group: str) -> bool:
  a, b = group.split("-")
  return a == b


def pair_counts(table_SxS: np.ndarray, same: bool) -> tuple[int, int]:
  """(pairs with a value, pairs excluded) of a table (the upper triangle if same)."""
  table = np.asarray(table_SxS, dtype=np.float64)
  values = table[np.triu_indices(len(table), 1)] if same else table.ravel()
  used = int(np.isfinite(values).sum())
  return used, int(values.size - used)


class SeedMedians:
  """`stats.seed_median` of each table on every resample row, computed once per
  table: `stats.bootstrap` draws the same rows (`stats.resample_indices`, seed
  0) for every statistic, and one table enters many statistics (its own
  interval, a trend, several ratios), so the claims cost one pass per table."""

  def __init__(self, n_seeds: int, n_resamples: int):
    self.draws = stats.resample_indices(n_seeds, n_resamples)
    self.cache = {}

  def __call__(self, table_SxS: np.ndarray, same: bool):
    key = (id(table_SxS), same)
    if key not in self.cache:  # The table is kept so that its id stays its own.
      f = stats.seed_median(table_SxS, same)
      rows = dict(zip((d.tobytes() for d in self.draws), f.rows(self.draws), strict=True))
      self.cache[key] = (table_SxS, f, rows)
    _, f, values = self.cache[key]
    return lambda idx: values[idx.tobytes()] if idx.tobytes() in values else f(idx)


def summarize(table_SxS: np.ndarray, same: bool, n_resamples: int, summary=None) -> dict:
  """The seed median of a table with its 95% interval and its pair counts."""
  statistic = (summary or stats.seed_median)(table_SxS, same)
  interval = stats.bootstrap(statistic, len(table_SxS), n_resamples)
  used, excluded = pair_counts(table_SxS, same)
  return interval | {"n_pairs_used": used, "n_pairs_excluded": excluded}


def summarize_all(tables: dict, n_resamples: int, summary=None) -> dict:
  """{width: {condition: {group: summarize(...)}}}."""
  return {
    w: {
      c: {g: summarize(t, is_same(g), n_resamples, summary) for g, t in by_group.items()}
      for c, by_group in by_condition.items()
    }
    for w, by_condition in tables.items()
  }


def _record(claim, interval, null, direction, tables, condition, width, primary, settings, **extra):
  """stats.verdict_record with counts over ``tables`` [(table, same)]: the
  pairs used are the fewest any table contributes (the weakest link decides
  whether there is enough data), the excluded ones their sum."""
  counts = [pair_counts(t, s) for t, s in tables]
  used = min(u for u, _ in counts)
  if used < settings["min_pairs"]:
    extra["reason"] = f"fewer than {settings['min_pairs']} converged pairs in a table"
  elif not (np.isfinite(interval["ci_low"]) and np.isfinite(interval["ci_high"])):
    extra["reason"] = "no interval (too few seeds or resamples with a defined statistic)"
  return stats.verdict_record(
    claim,
    interval,
    null,
    direction,
    n_seeds=len(tables[0][0]),
    n_pairs_used=used,
    n_pairs_excluded=sum(e for _, e in counts),
    condition=condition,
    width=width,
    min_pairs=settings["min_pairs"],
    primary=primary,
    **extra,
  )


def ratio_record(tables_c: dict, cross: str, condition, width, primary, settings, claim_id):
  """cross barrier / max(same-optimizer barriers) of one width, interval above 1 to hold."""
  a, b = cross.split("-")
  parts = [(tables_c[cross], False), (tables_c[f"{a}-{a}"], True), (tables_c[f"{b}-{b}"], True)]
  statistic = stats.ratio_of_medians(parts[0], parts[1:], settings["summary"])
  interval = stats.bootstrap(statistic, len(parts[0][0]), settings["n_resamples"])
  return _record(
    f"{cross} barrier > max({a}-{a}, {b}-{b}) barrier (ratio of seed medians)",
    interval,
    1.0,
    "greater",
    parts,
    condition,
    width,
    primary,
    settings,
    id=claim_id,
    group=cross,
  )


def decide(tables: dict, optimizers: list[str], settings: dict, summary=None) -> list[dict]:
  """Every claim record (stats.VERDICT_KEYS plus "id", "primary", "group"), for
  the primary condition first, then each secondary one.

  settings: tol (the "≈ 0" barrier), primary_condition, small_width,
  large_width, cross_pair, min_pairs, n_resamples, trend_floor (> 0: barriers
  below it count as it in the log of the trend). summary: a `SeedMedians`
  (made here when None) or any (table, same) -> statistic of stats' kind."""
  widths = sorted(int(w) for w in tables)
  conditions = list(tables[str(widths[0])])
  primary = settings["primary_condition"]
  if primary not in conditions:
    raise ValueError(f"primary condition {primary!r} not measured (have {conditions})")
  order = [primary] + [c for c in conditions if c != primary]
  any_table = next(iter(tables[str(widths[0])][primary].values()))
  summary = summary or SeedMedians(len(any_table), settings["n_resamples"])
  settings = dict(settings, summary=summary)
  records = []
  for condition in order:
    is_primary = condition == primary
    at = lambda w: tables[str(w)][condition]
    for o in optimizers:
      g = f"{o}-{o}"
      large = at(settings["large_width"])[g]
      interval = stats.bootstrap(
        stats.seed_median(large, True), len(large), settings["n_resamples"]
      )
      records.append(
        _record(
          f"{g} barrier ≈ 0 (seed median below tol = {settings['tol']:.3g})",
          interval,
          settings["tol"],
          "less",
          [(large, True)],
          condition,
          settings["large_width"],
          is_primary,
          settings,
          id=f"a_zero:{o}",
          group=g,
        )
      )
      per_width = [at(w)[g] for w in widths]
      slope = stats.trend_slope(widths, per_width, True, settings["trend_floor"], summary)
      # Rounded: barriers at the floor at every width give a slope of 0 up to
      # float noise (-1e-16), which must not read as "decreasing".
      interval = stats.bootstrap(
        lambda idx: round(slope(idx), 9), len(large), settings["n_resamples"]
      )
      records.append(
        _record(
          f"{g} barrier decreases with width (log-log slope over widths {widths})",
          interval,
          0.0,
          "less",
          [(t, True) for t in per_width],
          condition,
          None,
          is_primary,
          settings,
          id=f"a_trend:{o}",
          group=g,
        )
      )
    if settings["cross_pair"] in at(settings["small_width"]):
      records.append(
        ratio_record(
          at(settings["small_width"]),
          settings["cross_pair"],
          condition,
          settings["small_width"],
          is_primary,
          settings,
          "b",
        )
      )
    for a, b in itertools.combinations(sorted(optimizers), 2):
      for w in widths:
        records.append(
          ratio_record(at(w), group_name(a, b), condition, w, is_primary, settings, "cross")
        )
  return records


def headline(records: list[dict]) -> list[dict]:
  """The primary records of claims (a) and (b), the ones the report leads with."""
  return [r for r in records if r["primary"] and r["id"] != "cross"]
