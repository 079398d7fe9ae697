"""The sweep's claim logic on hand-made results whose verdict is known
(analysis.sweep.summarize_width / best_over, analysis.sweep_report.evaluate_claims)."""

import ml_collections
import numpy as np
import pytest

from analysis import sweep, sweep_report

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
  from configs.relu2 import get_config
  from data import synthetic
  from training import tasks
  from training import workdir as wd

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
