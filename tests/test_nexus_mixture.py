"""analysis.nexus_mixture and analysis.nexus_report: the verdict logic on
results with known answers, the train commands, bad configs, and the command
end to end on a tiny variant."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import nexus_mixture, nexus_plots, nexus_report
from configs.nexus_mixture import get_config

REPO = Path(__file__).resolve().parents[1]


def _record(val, ood, cos, dist, barrier=0.01):
  """A run record as nexus_mixture.run_record writes it (3 sources)."""
  c = [[1.0, cos, cos], [cos, 1.0, cos], [cos, cos, 1.0]]
  return {
    "val_loss": {"prose": val + 0.1, "code": val, "math": val - 0.1, "mean": val},
    "ood_loss": {"code_ood": ood, "math_ood": ood, "mean": ood},
    "grad_cosine": c,
    "grad_cosine_mean_pairwise": cos,
    "grad_cosine_curve": [[10, cos - 0.1], [20, cos]],
    "val_loss_curve": [[10, val + 0.5], [20, val]],
    "param_norm": 10.0,
    "tokens_per_step": 96,
    "num_steps": 20,
    "minima": {
      "mean_pairwise_distance": dist,
      "mean_pairwise_barrier": barrier,
      "mean_distance_to_start": 1.0,
      "relative_spread": dist,
      "mean_loss_drop": 0.3,
      "first_order_proxy": [0.01, 0.02, 0.03],
    },
  }


def _result(nexus_rows, base_rows):
  runs = {
    "adamw": {str(i): _record(*r) for i, r in enumerate(base_rows)},
    "nexus_adamw": {str(i): _record(*r) for i, r in enumerate(nexus_rows)},
  }
  return {"runs": runs, "sources": ["prose", "code", "math"], "token_budget": 1920}


def test_every_claim_held_when_nexus_is_better_in_every_seed():
  base = [(2.00, 2.50, 0.10, 1.00), (2.02, 2.55, 0.12, 1.10)]
  nexus = [(2.01, 2.40, 0.20, 0.90), (2.01, 2.45, 0.15, 1.00)]
  c = nexus_report.compare(_result(nexus, base), tolerance=0.02)["adamw"]
  assert {k: v["outcome"] for k, v in c["claims"].items()} == {
    "equal_loss": "held",
    "higher_cosine": "held",
    "closer_minima": "held",
    "lower_ood": "held",
  }
  assert c["metrics"]["grad_cosine"]["diffs"] == pytest.approx([0.10, 0.03])
  assert c["metrics"]["val_loss"]["base_mean"] == pytest.approx(2.01)
  assert c["claims"]["equal_loss"]["relative_diff"] == pytest.approx(0.0)
  assert c["metrics"]["ood_gap"]["diffs"] == pytest.approx([-0.11, -0.09])
  text = " ".join(nexus_report.verdicts({"adamw": c}))
  assert "in-distribution loss about equal: HELD" in text
  assert "gradient cosines higher: HELD (2/2 seeds)" in text
  assert "source minima closer: HELD (2/2 seeds)" in text
  assert "OOD loss lower: HELD (2/2 seeds)" in text and "not at equal loss" not in text


def test_mixed_and_failed_claims_are_reported_as_such():
  base = [(2.00, 2.50, 0.10, 1.00), (2.00, 2.50, 0.10, 1.00), (2.00, 2.50, 0.10, 1.00)]
  # Cosine: better in 2 of 3 seeds, better on average; minima: farther; loss: 10% worse.
  nexus = [(2.20, 2.40, 0.20, 1.10), (2.20, 2.60, 0.15, 1.20), (2.20, 2.45, 0.05, 0.90)]
  c = nexus_report.compare(_result(nexus, base), tolerance=0.02)["adamw"]
  outcomes = {k: (v["outcome"], v.get("seeds_with_claimed_sign")) for k, v in c["claims"].items()}
  assert outcomes == {
    "equal_loss": ("did not hold", None),
    "higher_cosine": ("held on average", 2),
    "closer_minima": ("did not hold", 1),
    "lower_ood": ("held on average", 2),
  }
  text = " ".join(nexus_report.verdicts({"adamw": c}))
  assert "in-distribution loss about equal: DID NOT HOLD" in text and "+10.0%" in text
  assert "not at equal loss" in text


def test_outcome_needs_the_claimed_sign_on_average():
  assert nexus_report.outcome([0.1, 0.2], +1) == ("held", 2)
  assert nexus_report.outcome([0.1, -0.05], +1) == ("held on average", 1)
  assert nexus_report.outcome([0.1, -0.2], +1) == ("did not hold", 1)
  assert nexus_report.outcome([0.0], -1) == ("did not hold", 0)


def test_arms_without_a_nexus_counterpart_are_not_compared():
  result = _result([(2.0, 2.5, 0.1, 1.0)], [(2.0, 2.5, 0.1, 1.0)])
  result["runs"]["muon"] = result["runs"]["adamw"]
  assert list(nexus_report.compare(result, 0.02)) == ["adamw"]


def test_report_and_plots_from_a_result(tmp_path):
  result = _result(
    [(2.01, 2.40, 0.20, 0.90), (2.01, 2.45, 0.15, 1.00)],
    [(2.00, 2.50, 0.10, 1.00), (2.02, 2.55, 0.12, 1.10)],
  )
  result["config"] = get_config("runlocal").to_dict()
  result["comparisons"] = nexus_report.compare(result, 0.02)
  result["verdicts"] = nexus_report.verdicts(result["comparisons"])
  plots = nexus_plots.write_plots(result, tmp_path)
  assert [p.name for p in plots] == [
    "losses.png",
    "grad_cosine_matrices.png",
    "training_curves.png",
    "minima.png",
  ]
  assert all(p.stat().st_size > 5000 for p in plots)
  report = nexus_report.render(result, plots)
  assert "| grad_cosine | 0.110 ± 0.010 | 0.175 ± 0.025 |" in report
  assert "| prose–code | prose–math | code–math |" in report.replace("arm | ", "")
  assert all(v in report for v in result["verdicts"])


def test_train_commands_and_bad_configs(tmp_path):
  config = get_config("runlocal")
  cmd = nexus_mixture.train_command(config, "nexus_muon", 2, tmp_path)
  assert (
    "--config=configs/gpt2.py:size=tiny,optimizer=muon,steps=6,batch=6,seq_len=32,"
    "similarity=3,nexus,inner_lr=0.02,inner_steps=3,runlocal" in cmd
  )
  assert "--config.seed=2" in cmd
  assert ",nexus" not in " ".join(nexus_mixture.train_command(config, "adamw", 0, tmp_path))
  assert nexus_mixture.parse_arm("nexus_lion_k") == ("lion_k", True)
  for field, value, message in (
    ("arms", "", "config.arms is empty"),
    ("seeds", "0+x", "not '+'-separated integers"),
    ("batch", 8, "multiple of the 3 sources"),
  ):
    bad = get_config("runlocal")
    bad[field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
      nexus_mixture.arms_and_seeds(bad)


def test_run_without_similarity_logging_is_refused(tmp_path):
  (tmp_path / "summary.json").write_text(json.dumps({"final_val_loss": {}}))
  (tmp_path / "metrics.jsonl").write_text("")
  with pytest.raises(ValueError, match="trained without similarity_every"):
    nexus_mixture.run_record(tmp_path, {}, None)


# ~100 s on 2 cores: run with `pytest -m slow` (the verdict logic above is in the default run).
@pytest.mark.slow
def test_command_end_to_end(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "analysis.nexus_mixture",
    "--config=configs/nexus_mixture.py:runlocal,seeds=0",
    "--config.arms=adamw+nexus_adamw",
    f"--workdir={tmp_path}",
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads((tmp_path / "nexus.json").read_text())
  assert set(out["runs"]) == {"adamw", "nexus_adamw"} and out["sources"] == [
    "prose",
    "code",
    "math",
  ]
  assert out["token_budget"] == 6 * 6 * 32  # steps × batch × seq_len, the same for both arms
  run = out["runs"]["nexus_adamw"]["0"]
  assert set(run["val_loss"]) == {"prose", "code", "math", "mean"}
  assert set(run["ood_loss"]) == {"code_ood", "math_ood", "mean"}
  assert len(run["grad_cosine"]) == 3 and [s for s, _ in run["grad_cosine_curve"]] == [3, 6]
  m = run["minima"]
  assert len(m["pairwise_distance"]) == 3 and m["pairwise_distance"][0][0] == 0.0
  assert all(d > 0 for d in m["loss_drop"])  # fine-tuning on one source lowers its loss
  claims = out["comparisons"]["adamw"]["claims"]
  assert set(claims) == {"equal_loss", "higher_cosine", "closer_minima", "lower_ood"}
  # The saved verdicts are the ones the saved runs give, and the report states them.
  tolerance = out["config"]["equal_loss_tolerance"]
  assert nexus_report.compare(out, tolerance) == out["comparisons"]
  assert nexus_report.verdicts(out["comparisons"]) == out["verdicts"]
  report = (tmp_path / "report.md").read_text()
  assert "## Verdicts" in report and "Nexus(AdamW) vs AdamW (1 seed)" in report
  assert all(v in report for v in out["verdicts"])
  for name in ("losses.png", "grad_cosine_matrices.png", "training_curves.png", "minima.png"):
    assert (tmp_path / name).stat().st_size > 5000
  # A rerun trains nothing and gives the same numbers.
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and again.stderr.count("finished before, skipped") == 2
  rerun = json.loads((tmp_path / "nexus.json").read_text())
  assert rerun["comparisons"] == out["comparisons"]
  # A finished run trained with another γ is not silently reused.
  other_gamma = subprocess.run(
    cmd + ["--config.inner_learning_rate=0.5"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert other_gamma.returncode != 0
  assert "optimizer.nexus.inner_learning_rate=0.02 (the config asks 0.5)" in other_gamma.stderr
  assert "Traceback" not in other_gamma.stderr
