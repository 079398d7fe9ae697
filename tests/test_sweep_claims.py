"""The sweep's decision rule on tables whose verdict is known (analysis.sweep_claims),
the convergence gate (analysis.sweep_endpoints), the λ rule and the report's
verdict sentences (analysis.sweep_report). Pure numpy: no training."""

from types import SimpleNamespace

import ml_collections
import numpy as np
import pytest

from analysis import stats, sweep, sweep_claims, sweep_endpoints, sweep_report
from configs.relu2 import get_config as relu2_config
from configs.relu2_sweep import get_config
from training import tasks
from training import workdir as wd

S, TOL = 8, 0.01
OPTS = ["adamw", "muon"]


def _same(values_S, rng, noise=0.0):
  """A symmetric same-optimizer table: pair (i, j) = (v_i + v_j)/2 + noise."""
  e = rng.normal(0, noise, (len(values_S), len(values_S)))
  t = (values_S[:, None] + values_S[None, :]) / 2 + (e + e.T) / 2
  np.fill_diagonal(t, np.nan)
  return t


def _tables(same_by_width, cross_by_width, seed=0, n=S):
  """{width: {"linear+align": {group: S×S}}}: same-optimizer barriers around
  same_by_width[w], adamw-muon around cross_by_width[w] (small seed noise)."""
  rng = np.random.default_rng(seed)
  out = {}
  for w, level in same_by_width.items():
    t = {f"{o}-{o}": _same(rng.normal(level, level / 10, n), rng, level / 20) for o in OPTS}
    t["adamw-muon"] = rng.normal(cross_by_width[w], cross_by_width[w] / 10, (n, n))
    out[str(w)] = {"linear+align": t}
  return out


def _settings(**kw):
  return {
    "tol": TOL,
    "primary_condition": "linear+align",
    "small_width": 4,
    "large_width": 256,
    "cross_pair": "adamw-muon",
    "min_pairs": 6,
    "n_resamples": 60,
    "trend_floor": TOL / 100,
  } | kw


def _by_id(records):
  return {(r["id"], r.get("group"), r["width"]): r for r in records}


def test_separated_tables_hold_and_identical_do_not():
  """Barriers falling with width to ≈ 0, cross 10x same at width 4: every claim
  held; cross = same everywhere: (b) and the per-width ratios are not held."""
  same = {4: 0.1, 16: 0.02, 256: 0.001}
  records = sweep_claims.decide(
    _tables(same, {w: 10 * v for w, v in same.items()}), OPTS, _settings()
  )
  got = _by_id(records)
  for o in OPTS:
    assert got[("a_zero:" + o, f"{o}-{o}", 256)]["verdict"] == stats.HELD
    trend = got[("a_trend:" + o, f"{o}-{o}", None)]
    assert trend["verdict"] == stats.HELD and trend["ci_high"] < 0
  b = got[("b", "adamw-muon", 4)]
  assert (
    b["verdict"] == stats.HELD and b["ci_low"] > 1 and b["statistic"] == pytest.approx(10, rel=0.3)
  )
  assert (
    set(stats.VERDICT_KEYS) <= set(b) and b["n_seeds"] == S and b["condition"] == "linear+align"
  )
  assert b["n_pairs_used"] == S * (S - 1) // 2 and b["n_pairs_excluded"] == 0
  assert all(got[("cross", "adamw-muon", w)]["verdict"] == stats.HELD for w in same)

  equal = sweep_claims.decide(_tables(same, same), OPTS, _settings())
  b = _by_id(equal)[("b", "adamw-muon", 4)]
  assert b["verdict"] in (stats.INCONCLUSIVE, stats.NOT_HELD) and b["ci_low"] < 1
  # Flat barriers well above tol: not ≈ 0 (did not hold) and no trend (inconclusive).
  flat = sweep_claims.decide(_tables({4: 0.1, 16: 0.1, 256: 0.1}, same), OPTS, _settings())
  got = _by_id(flat)
  assert got[("a_zero:adamw", "adamw-adamw", 256)]["verdict"] == stats.NOT_HELD
  assert got[("a_trend:adamw", "adamw-adamw", None)]["verdict"] == stats.INCONCLUSIVE


def test_one_outlier_seed_does_not_decide():
  """One seed of 10 whose pairs at the large width are 100x tol: the seed median
  keeps (a) held (with 8 seeds, resamples that draw it 3 times already reach
  the interval's top: analysis.stats.seed_median)."""
  tables = _tables({4: 0.1, 256: 0.001}, {4: 1.0, 256: 0.01}, n=10)
  t = tables["256"]["linear+align"]["adamw-adamw"]
  t[2, :] = t[:, 2] = 1.0
  np.fill_diagonal(t, np.nan)
  got = _by_id(sweep_claims.decide(tables, OPTS, _settings()))
  assert got[("a_zero:adamw", "adamw-adamw", 256)]["verdict"] == stats.HELD


def test_too_few_converged_pairs_is_inconclusive_and_counted():
  tables = _tables({4: 0.1, 256: 0.001}, {4: 1.0, 256: 0.01})
  for g, t in tables["4"]["linear+align"].items():
    t[3:, :] = np.nan  # Seeds 3.. of the first optimizer unconverged.
    if sweep_claims.is_same(g):
      t[:, 3:] = np.nan
  b = _by_id(sweep_claims.decide(tables, OPTS, _settings()))[("b", "adamw-muon", 4)]
  assert b["verdict"] == stats.INCONCLUSIVE and b["n_pairs_used"] == 3 and "fewer" in b["reason"]
  assert b["n_pairs_excluded"] == 2 * (28 - 3) + (64 - 24)


def test_secondary_conditions_are_reported_but_never_primary():
  tables = _tables({4: 0.1, 256: 0.001}, {4: 1.0, 256: 0.01})
  for w in tables:  # The secondary condition says the opposite.
    tables[w]["linear"] = {g: t[::-1, ::-1] * 0 + 5.0 for g, t in tables[w]["linear+align"].items()}
  records = sweep_claims.decide(tables, OPTS, _settings())
  assert records[0]["condition"] == "linear+align"
  head = sweep_claims.headline(records)
  assert {r["condition"] for r in head} == {"linear+align"} and all(r["primary"] for r in head)
  secondary = [r for r in records if not r["primary"]]
  assert {r["condition"] for r in secondary} == {"linear"}
  with pytest.raises(ValueError, match="primary"):
    sweep_claims.decide(tables, OPTS, _settings(primary_condition="bezier"))


def _run(name, train_losses, seeds):
  summary = {
    "final": {"train_loss": train_losses, "test_loss": train_losses},
    "constraints": {
      "hidden/kernel": {
        "k": "l1",
        "weight_decay": 2.0,
        "bound": 1.0,
        "lambda_dual_norm": [0.9] * seeds,
      }
    },
  }
  config = ml_collections.ConfigDict({"optimizer": {"name": name}})
  return SimpleNamespace(summary=summary, config=config, seeds=list(range(seeds)))


def test_convergence_gate_excludes_unconverged_runs():
  runs = [_run("adamw", [0.0, 0.5, 0.001], 3), _run("muon", [0.002, 0.0, 0.0], 3)]
  valid = sweep_endpoints.converged(runs, zero_loss=0.25, fraction=0.01)  # gate 0.0025
  np.testing.assert_array_equal(valid, [True, False, True, True, True, True])
  rows = sweep_endpoints.run_rows(runs, valid, 0.25)
  assert rows["adamw"]["converged"] == [True, False, True]
  assert rows["adamw"]["train_loss_relative"][1] == pytest.approx(2.0)
  # connectivity's pair list → tables: every pair touching (adamw, seed 1) is NaN.
  pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
  result = {
    "pairs": [
      {"a": {"index": i}, "b": {"index": j}, "train_barrier": {"linear": {"height": 0.1}}}
      for i, j in pairs
    ]
  }
  tables = sweep_endpoints.barrier_tables(result, runs, valid, "linear")
  assert set(tables) == {"adamw-adamw", "adamw-muon", "muon-muon"}
  assert sweep_claims.pair_counts(tables["adamw-adamw"], True) == (1, 2)
  assert sweep_claims.pair_counts(tables["adamw-muon"], False) == (6, 3)
  assert np.isnan(tables["adamw-muon"][1]).all() and sweep_claims.pair_counts(
    tables["muon-muon"], True
  ) == (3, 0)
  radius = sweep_endpoints.muon_radius(rows, 50)
  assert radius["statistic"] == pytest.approx(0.9) and radius["n_converged"] == 3


def test_weight_decay_rule_and_commands():
  config = get_config()
  assert sweep.weight_decay(config, "adamw", "weight_decay", 4) == 1.0
  assert sweep.weight_decay(config, "adamw", "weight_decay", 256) == 8.0
  assert sweep.weight_decay(config, "muon", "weight_decay", 1024) == 2.0  # the cap
  cmd = sweep.train_command(config, "muon", 64, sweep.run_dir(sweep.Path("/x"), "muon", 64))
  assert "--config.optimizer.schedule=warmup_cosine" in cmd
  assert "--config.optimizer.weight_decay=2.0" in cmd and "--config.data.teacher_width=4" in cmd
  assert any(c.startswith("--config.optimizer.adam_weight_decay=") for c in cmd)
  full = get_config("full")
  assert max(full.widths) >= 1024 and full.seeds >= 8
  assert min(config.widths) <= 4 <= 256 <= max(config.widths) and config.seeds >= 6
  config.primary_condition = "bezier"
  with pytest.raises(sweep.UserError, match="primary_condition"):
    sweep.check_config(config, sweep.Path("/tmp/unused"))


def test_report_states_each_headline_verdict_and_the_disagreement():
  records = sweep_claims.decide(
    _tables({4: 0.1, 256: 0.001}, {4: 0.1, 256: 0.01}), OPTS, _settings()
  )
  lines = sweep_report.disagreements(records)
  b = _by_id(records)[("b", "adamw-muon", 4)]
  assert b["verdict"] != stats.HELD
  assert any("separated" in line and b["verdict"] in line for line in lines)
  assert all(stats.describe(r).count("95% interval") == 1 for r in sweep_claims.headline(records))


def test_zero_predictor_loss_reads_the_trained_task(tmp_path):
  run = relu2_config("width=4")
  run.data.input_dist, run.data.task, run.data.loss = "sphere", "teacher_sign", "logistic"
  (tmp_path / "train" / "adamw_w4").mkdir(parents=True)
  wd.write_json_atomic(tmp_path / "train" / "adamw_w4" / wd.CONFIG_FILE, wd.config_json(run))
  config = ml_collections.ConfigDict({"optimizers": {"adamw": {}}, "widths": [4]})
  got = sweep.zero_predictor_loss(config, tmp_path)
  assert got == pytest.approx(np.log(2.0))  # logistic loss of f = 0 on ±1 labels
  assert got == pytest.approx(tasks.zero_predictor_loss(run))
