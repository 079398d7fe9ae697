"""analysis.sweep end to end on a tiny config (slow: 6 train.py subprocesses):
writes report.md and sweep.json with a machine-readable verdict per claim,
the endpoints' balls and losses, and a rerun skips the finished training runs."""

import json

import pytest
from absl import logging

from analysis import stats, sweep
from configs.relu2_sweep import get_config

logging.set_verbosity(logging.WARNING)


@pytest.mark.slow
def test_sweep_runlocal_report_and_resume(tmp_path):
  config = get_config("runlocal")
  result = sweep.run_sweep(config, tmp_path)
  assert set(result["trained"]) == {f"{o}_w{w}" for o in ("adamw", "lion", "muon") for w in (4, 16)}

  saved = json.loads((tmp_path / "sweep.json").read_text())
  assert set(saved["barriers"]) == {"4", "16"}
  assert set(saved["barriers"]["16"]) == set(config.conditions)
  groups = saved["barriers"]["16"]["linear+align"]
  assert set(groups) == {f"{a}-{b}" for a, b in (("adamw",) * 2, ("lion",) * 2, ("muon",) * 2)} | {
    "adamw-lion",
    "adamw-muon",
    "lion-muon",
  }
  assert groups["adamw-muon"]["n_pairs_used"] + groups["adamw-muon"]["n_pairs_excluded"] == 9
  for record in saved["claims"]:
    assert set(stats.VERDICT_KEYS) <= set(record)
    assert record["verdict"] in (stats.HELD, stats.NOT_HELD, stats.INCONCLUSIVE)
  ids = {r["id"] for r in saved["claims"] if r["primary"]}
  assert {"a_zero:adamw", "a_trend:muon", "b", "cross"} <= ids
  ends = saved["endpoints"]["16"]
  assert set(ends["membership"]["balls"]) == {"adamw", "lion", "muon"}
  assert len(ends["membership"]["per_seed"]["adamw"]) == config.seeds
  assert ends["muon_radius"]["weight_decay"] > 0 and 0.6 < saved["ns_unit_value"] < 0.8
  for o in ("adamw", "lion", "muon"):
    assert ends["runs"][o]["constraints"]["hidden/kernel"]["per_seed"]
  report = (tmp_path / "report.md").read_text()
  for line in saved["verdicts"]:  # Each headline verdict in one sentence.
    assert line in report
  assert "## Where this disagrees with the paper" in report and "effective radius" in report
  for png in ("barrier_vs_width", "ratio_vs_width", "constraints_vs_width", "loss_vs_width"):
    assert (tmp_path / "plots" / f"{png}.png").stat().st_size > 5000

  # Rerun: every training run is finished, so none is started again.
  mtimes = {p: p.stat().st_mtime for p in (tmp_path / "train").glob("*/summary.json")}
  again = sweep.run_sweep(config, tmp_path)
  assert set(again["trained"].values()) == {"skipped"}
  assert {p: p.stat().st_mtime for p in mtimes} == mtimes
  assert [r["verdict"] for r in again["claims"]] == [r["verdict"] for r in result["claims"]]
