"""analysis.gpt2_spectra's verdicts with intervals (`analysis.stats`, a cluster
bootstrap over seeds), per protocol.

Pairs share endpoints, so the unit of resampling is the seed: a same-optimizer
table is indexed (seed i, seed j) of one optimizer, a cross table (seed i of
the first, seed j of the second). The statistic is `stats.seed_median`. The
claims and their nulls are declared in the config before the run:

- "preserves the spectrum" (same pairs, per optimizer): a pair's value is the
  worst, over matrices and over σ_max / stable rank / effective rank, of
  max_t |s(t) − s_lin(t)| / spread, s_lin the endpoints' interpolation and
  spread the std over seeds of s at that optimizer's endpoints (floored at
  1e-3·|mean| so identical endpoints do not divide by 0). Held when the
  interval lies below config.preserve_tolerance.
- "smooth transition" (cross pairs): the worst overshoot outside the endpoints'
  range relative to |end − start| (`deviation_metrics`); held below
  config.spike_tolerance.
- "low barrier" (same and cross): the loss barrier; held below
  config.barrier_tolerance nats.
"""

import numpy as np

from analysis import stats
from analysis.spectra import STAT_NAMES

MIN_PAIRS = 3
SPREAD_FLOOR = 1e-3


def _split(name: str) -> tuple[str, int]:
  opt, seed = name.rsplit("_s", 1)
  return opt, int(seed)


def endpoint_spread(pairs: list[dict]) -> dict:
  """{(optimizer, matrix, stat): std over seeds of the endpoint values}."""
  values = {}
  for p in pairs:
    for name, m in p["matrices"].items():
      for stat in STAT_NAMES:
        for run, v in ((p["a"], m[stat]["start"]), (p["b"], m[stat]["end"])):
          opt, seed = _split(run)
          values.setdefault((opt, name, stat), {})[seed] = v
  out = {}
  for key, by_seed in values.items():
    v = np.asarray(list(by_seed.values()))
    std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    out[key] = max(std, SPREAD_FLOOR * float(np.abs(v).mean()), 1e-12)
  return out


def preservation_value(pair: dict, spread: dict, opt: str) -> float:
  """The pair's worst deviation from the endpoints' interpolation, in spreads."""
  worst = 0.0
  for name, m in pair["matrices"].items():
    for stat in STAT_NAMES:
      s_T = np.asarray(m[stat]["values"])
      ts = np.linspace(0.0, 1.0, s_T.size)
      lin = (1 - ts) * s_T[0] + ts * s_T[-1]
      worst = max(worst, float(np.max(np.abs(s_T - lin))) / spread[(opt, name, stat)])
  return worst


def overshoot_value(pair: dict) -> float:
  return max(m[stat]["overshoot"] for m in pair["matrices"].values() for stat in STAT_NAMES)


def tables(result: dict) -> dict:
  """{(claim kind, optimizer or "o1-o2"): (table_SxS, same)} of one protocol."""
  pairs = [p for p in result["pairs"] if not p["kind"].startswith("self")]
  seeds = sorted({_split(n)[1] for n in result["runs"]})
  index = {s: i for i, s in enumerate(seeds)}
  spread = endpoint_spread(pairs)
  out = {}

  def put(key, same, i, j, value):
    table, _ = out.setdefault(key, (np.full((len(seeds), len(seeds)), np.nan), same))
    table[i, j] = value
    if same:
      table[j, i] = value

  for p in pairs:
    (oa, sa), (ob, sb) = _split(p["a"]), _split(p["b"])
    i, j = index[sa], index[sb]
    if oa == ob:
      put(("preserve", oa), True, i, j, preservation_value(p, spread, oa))
      put(("barrier", oa), True, i, j, p["loss_barrier"])
    else:
      put(("smooth", f"{oa}-{ob}"), False, i, j, overshoot_value(p))
      put(("barrier", f"{oa}-{ob}"), False, i, j, p["loss_barrier"])
  return out


CLAIMS = {
  "preserve": ("{} paths preserve the spectrum (worst deviation / endpoint spread)", "preserve"),
  "smooth": ("{} paths move smoothly between the spectra (worst overshoot)", "spike"),
  "barrier": ("{} paths have a low loss barrier (nats)", "barrier"),
}


def interval_verdicts(result: dict, config) -> list[dict]:
  """One `stats.verdict_record` per claim and optimizer (pair) of one protocol."""
  out = []
  for (kind, who), (table, same) in sorted(tables(result).items()):
    text, tolerance = CLAIMS[kind]
    interval = stats.bootstrap(stats.seed_median(table, same), table.shape[0])
    entries = table[np.triu_indices(table.shape[0], 1)] if same else table
    n_pairs = int(np.isfinite(entries).sum())
    out.append(
      stats.verdict_record(
        text.format(f"{'same' if same else 'cross'}-optimizer {who}"),
        interval,
        float(config[f"{tolerance}_tolerance"]),
        "less",
        n_seeds=table.shape[0],
        n_pairs_used=n_pairs,
        n_pairs_excluded=0,
        condition=result["protocol"],
        width=None,
        min_pairs=MIN_PAIRS,
      )
    )
  return out
