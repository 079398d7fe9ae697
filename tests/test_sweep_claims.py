"""The sweep's claim logic on hand-made results whose verdict is known
(analysis.sweep.summarize_width / best_over, analysis.sweep_report's
best_connecting / claim_a / claim_b / evaluate_claims), and the zero
predictor's loss the tolerance is read on."""

import math

import ml_collections
import numpy as np
import pytest

from analysis import sweep, sweep_report
from configs.relu2 import get_config
from data import synthetic
from training import tasks
from training import workdir as wd

TOL_FRACTION, ZERO_LOSS = 0.1, 0.5  # tolerance = 0.05


def _groups(**means):
  return {
    g.replace("_", "-"): {"mean": m, "std": 0.0, "min": m, "max": m, "num_pairs": 3}
    for g, m in means.items()
  }


def _sweep(large: dict, small: dict) -> dict:
  """Barrier tables at widths 128 (large) and 2 (small): {condition: {group: mean}}."""
  table = lambda conds: {c: _groups(**g) for c, g in conds.items()}
  return {
    "config": {"connected_tol": TOL_FRACTION, "optimizers": ["adamw", "muon"]},
    "zero_predictor_loss": ZERO_LOSS,
    "barriers": {"128": table(large), "2": table(small)},
  }


SAME = dict(adamw_adamw=0.01, muon_muon=0.02, adamw_muon=0.03)


def test_claim_a_held_when_every_optimizer_connects_after_alignment():
  large = {
    "linear": dict(adamw_adamw=0.4, muon_muon=0.3, adamw_muon=0.5),
    "linear+align": dict(adamw_adamw=0.01, muon_muon=0.04, adamw_muon=0.2),
    "best": dict(adamw_adamw=0.01, muon_muon=0.04, adamw_muon=0.2),
  }
  claims = sweep_report.evaluate_claims(_sweep(large, {"best": SAME, "linear": SAME}))
  a = claims["a"]
  assert a["held"] and a["tolerance"] == pytest.approx(0.05)
  assert a["per_optimizer"]["muon"]["best_condition"] == "linear+align"
  assert a["per_optimizer"]["adamw"]["linear"] == 0.4  # reported, but not what decides
  assert "HELD at width 128" in a["verdict"]


def test_claim_a_did_not_hold_when_one_optimizer_stays_above_tolerance():
  large = {
    "linear": dict(adamw_adamw=0.01, muon_muon=0.01, adamw_muon=0.5),
    "bezier+align": dict(adamw_adamw=0.01, muon_muon=0.06, adamw_muon=0.2),
    "best": dict(adamw_adamw=0.01, muon_muon=0.01, adamw_muon=0.2),
  }
  a = sweep_report.evaluate_claims(_sweep(large, {"best": SAME}))["a"]
  # The unaligned linear path is not a connecting condition: muon's 0.01 there does not count.
  assert not a["held"] and not a["per_optimizer"]["muon"]["connected"]
  assert a["per_optimizer"]["adamw"]["connected"] and "DID NOT HOLD" in a["verdict"]


def test_claim_b_held_only_when_the_cross_barrier_exceeds_both_and_the_tolerance():
  large = {"linear+align": SAME, "best": SAME}
  separated = dict(adamw_adamw=0.02, muon_muon=0.01, adamw_muon=0.3)
  b = sweep_report.evaluate_claims(
    _sweep(large, {"best_linear": separated, "linear": separated, "best": SAME})
  )["b"]
  assert b["held"] and b["decided_on"] == "best_linear"
  assert b["per_condition"]["best_linear"]["inter_over_intra"] == pytest.approx(15.0)
  assert b["held_on_linear_path"] is True
  # Larger than the same-optimizer barriers but below the tolerance: not separated.
  tiny = dict(adamw_adamw=0.001, muon_muon=0.002, adamw_muon=0.01)
  b = sweep_report.evaluate_claims(_sweep(large, {"best_linear": tiny, "best": tiny}))["b"]
  assert not b["held"] and "DID NOT HOLD" in b["verdict"]
  # Cross barrier below a same-optimizer one: not separated.
  mixed = dict(adamw_adamw=0.5, muon_muon=0.01, adamw_muon=0.3)
  b = sweep_report.evaluate_claims(_sweep(large, {"best_linear": mixed, "best": mixed}))["b"]
  assert not b["held"] and b["per_condition"]["best_linear"]["inter_over_intra"] == 0.6


def test_best_connecting_skips_the_unaligned_line_and_unmeasured_groups():
  large = {
    "linear": dict(adamw_adamw=0.001),  # Lowest, but not a connecting condition.
    "bezier": dict(adamw_adamw=0.03, muon_muon=0.2),
    "polychain+align": dict(adamw_adamw=0.02),
    "best": dict(adamw_adamw=0.001, muon_muon=0.2),
  }
  result = _sweep(large, {})
  assert sweep_report.best_connecting(result, "128", "adamw-adamw") == (0.02, "polychain+align")
  assert sweep_report.best_connecting(result, "128", "muon-muon") == (0.2, "bezier")
  value, condition = sweep_report.best_connecting(result, "128", "lion-lion")
  assert math.isnan(value) and condition is None
  assert sweep_report.tolerance(result) == pytest.approx(TOL_FRACTION * ZERO_LOSS)


def test_claim_a_without_a_connecting_condition_did_not_hold():
  # Only the unaligned line was measured: nothing can show a connection.
  a = sweep_report.claim_a(_sweep({"linear": SAME, "best": SAME}, {"best": SAME}))
  assert not a["held"]
  assert all(v["best_condition"] is None for v in a["per_optimizer"].values())
  assert all(math.isnan(v["best_condition_mean"]) for v in a["per_optimizer"].values())


def test_claim_a_at_the_tolerance_holds_and_just_above_does_not():
  at = dict(adamw_adamw=0.05, muon_muon=0.05)  # tolerance = 0.1 × 0.5 = 0.05
  above = dict(adamw_adamw=0.05, muon_muon=0.0501)
  for table, held in ((at, True), (above, False)):
    large = {"linear+align": table, "best": table}
    assert sweep_report.claim_a(_sweep(large, {"best": SAME}))["held"] is held


def test_claim_b_falls_back_to_best_and_needs_adamw_and_muon():
  separated = dict(adamw_adamw=0.0, muon_muon=0.0, adamw_muon=0.3)
  result = _sweep({"linear+align": SAME, "best": SAME}, {"best": separated})
  b = sweep_report.claim_b(result)
  assert b["held"] and b["decided_on"] == "best"  # No straight-path summary: the best path.
  assert b["held_on_linear_path"] is None  # No unaligned line measured.
  assert b["per_condition"]["best"]["inter_over_intra"] == pytest.approx(0.3 / 1e-12)
  result["config"]["optimizers"] = ["adamw"]  # No muon: claim (b) is not asked.
  assert set(sweep_report.evaluate_claims(result)) == {"a"}


def test_one_width_is_both_the_largest_and_the_smallest():
  table = {"linear": SAME, "linear+align": SAME, "best": SAME, "best_linear": SAME}
  result = _sweep(table, table)
  del result["barriers"]["2"]
  claims = sweep_report.evaluate_claims(result)
  assert claims["a"]["width"] == claims["b"]["width"] == 128
  assert claims["a"]["held"]  # Every same-optimizer barrier ≤ 0.05.
  assert not claims["b"]["held"]  # adamw-muon 0.03: above both, but below the tolerance.


def test_best_over_takes_the_pairwise_minimum_and_counts_conditions():
  heights_CxP = np.array([[0.1, 0.5, 0.3, 0.9], [0.2, 0.4, 0.6, 0.0]])
  out = sweep.best_over(heights_CxP, ["linear", "bezier"], ["a-a", "a-a", "a-b", "a-b"])
  assert out["a-a"]["mean"] == pytest.approx(0.25)  # min(0.1, 0.2), min(0.5, 0.4)
  assert out["a-a"]["conditions"] == {"linear": 1, "bezier": 1}
  assert out["a-b"]["min"] == 0.0 and out["a-b"]["max"] == pytest.approx(0.3)
  assert out["a-b"]["num_pairs"] == 2


def _result(heights, groups):
  pairs = [
    {"group": g, "train_barrier": {"linear": {"height": h}}} for h, g in zip(heights, groups)
  ]
  stats = {
    g: {
      "num_pairs": groups.count(g),
      "train_linear": {"mean": float(np.mean([h for h, gg in zip(heights, groups) if gg == g]))},
      "test_linear": {"mean": 0.0},
    }
    for g in set(groups)
  }
  return {"pairs": pairs, "groups": stats}


def test_summarize_width_best_linear_ignores_curves():
  config = ml_collections.ConfigDict({"barrier_kind": "linear"})
  groups = ["a-a", "a-b"]
  results = {
    "linear": _result([0.3, 0.8], groups),
    "linear+align": _result([0.2, 0.9], groups),
    "bezier": _result([0.0, 0.0], groups),
  }
  out = sweep.summarize_width(config, results)
  assert out["best"]["a-b"]["mean"] == 0.0 and out["best"]["a-b"]["conditions"]["bezier"] == 1
  assert out["best_linear"]["a-a"]["mean"] == pytest.approx(0.2)
  assert out["best_linear"]["a-b"]["mean"] == pytest.approx(0.8)
  assert out["linear"]["a-b"]["mean"] == pytest.approx(0.8)


def test_zero_predictor_loss_reads_the_trained_task(tmp_path):
  run = get_config("width=4")
  run.data.input_dist, run.data.task, run.data.loss = "sphere", "teacher_sign", "logistic"
  (tmp_path / "train" / "adamw_w4").mkdir(parents=True)
  wd.write_json_atomic(tmp_path / "train" / "adamw_w4" / wd.CONFIG_FILE, wd.config_json(run))
  config = ml_collections.ConfigDict({"optimizers": {"adamw": {}}, "widths": [4]})
  got = sweep.zero_predictor_loss(config, tmp_path)
  assert got == pytest.approx(np.log(2.0))  # logistic loss of f = 0 on ±1 labels
  assert got == pytest.approx(tasks.zero_predictor_loss(run))
  # The old formula: ½·mean y² of a Gaussian-input teacher, whatever was trained.
  d = run.data
  old = synthetic.make_task(
    "teacher", d.input_dim, d.n_train, d.n_test, d.teacher_width, "gaussian", d.label_noise, d.seed
  )
  assert abs(0.5 * np.mean(old.y_train_NxO**2) - got) > 0.1
