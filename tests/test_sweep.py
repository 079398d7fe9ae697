"""analysis.sweep on a tiny config: trains by subprocess, writes report.md and
sweep.json with the claims, and a rerun skips the finished training runs."""

import json
from pathlib import Path

from absl import logging

from analysis import sweep
from configs.relu2_sweep import get_config

logging.set_verbosity(logging.WARNING)


def test_sweep_runlocal_report_and_resume(tmp_path):
  config = get_config("runlocal")
  assert config.widths == [2, 8] and config.seeds == 2
  result = sweep.run_sweep(config, tmp_path)
  assert set(result["trained"]) == {f"{o}_w{w}" for o in ("adamw", "lion", "muon") for w in (2, 8)}
  assert all(v != "skipped" for v in result["trained"].values())

  saved = json.loads((tmp_path / "sweep.json").read_text())
  assert set(saved["barriers"]) == {"2", "8"}
  for width in ("2", "8"):
    assert set(saved["barriers"][width]) == {"linear", "bezier+align", "best", "best_linear"}
    groups = saved["barriers"][width]["best"]
    assert set(groups) == {
      "adamw-adamw",
      "lion-lion",
      "muon-muon",
      "adamw-lion",
      "adamw-muon",
      "lion-muon",
    }
    assert groups["adamw-muon"]["num_pairs"] == 4 and groups["muon-muon"]["num_pairs"] == 1
    for o in ("adamw", "lion", "muon"):
      assert saved["runs"][width][o]["constraints"]  # λ·K*/bound per decayed leaf.
  assert set(saved["claims"]) == {"a", "b"}
  for claim in saved["claims"].values():
    assert isinstance(claim["held"], bool) and claim["verdict"].startswith("Claim (")
  report = (tmp_path / "report.md").read_text()
  assert "## Claims" in report and "Claim (a)" in report and "Claim (b)" in report
  for claim in saved["claims"].values():  # The report states the computed verdicts.
    assert claim["verdict"] in report
  for png in ("barrier_vs_width.png", "constraints_vs_width.png", "loss_vs_width.png"):
    assert (tmp_path / "plots" / png).stat().st_size > 5000
  assert (tmp_path / "connectivity" / "w8" / "bezier+align" / "connectivity.json").exists()

  # Rerun: every training run is finished, so none is started again.
  mtimes = {p: p.stat().st_mtime for p in (tmp_path / "train").glob("*/summary.json")}
  again = sweep.run_sweep(config, tmp_path)
  assert set(again["trained"].values()) == {"skipped"}
  assert {p: p.stat().st_mtime for p in mtimes} == mtimes
  assert again["claims"]["a"]["held"] == result["claims"]["a"]["held"]


def test_sweep_commands_and_weight_decay_scaling():
  config = get_config()
  assert sweep.weight_decay(config, "adamw", 4, 3.0) == 3.0
  assert abs(sweep.weight_decay(config, "adamw", 64, 3.0) - 6.0) < 1e-9
  cmd = sweep.train_command(config, "muon", 64, sweep.run_dir(Path("/x"), "muon", 64))
  assert any(
    c.startswith("--config=")
    and c.endswith(
      f"optimizer=muon,width=64,seeds={config.seeds},steps={config.num_steps},"
      f"chunk={config.seed_chunk_size}"
    )
    for c in cmd
  )
  assert "--config.data.teacher_width=4" in cmd
  assert any(c.startswith("--config.optimizer.adam_weight_decay=") for c in cmd)
  assert sweep.parse_condition("bezier+align") == ("bezier", True)
  assert get_config("full").points == 65
