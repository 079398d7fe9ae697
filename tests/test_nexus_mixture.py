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

from analysis import nexus_claims, nexus_mixture, nexus_plots, nexus_report, nexus_runs, stats
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


def _result(nexus_rows, base_rows, control_rows=None, grid_rows=None):
  """A result dict as analysis.nexus_mixture.run builds it before the comparisons."""
  config = get_config("runlocal").to_dict()
  arm_rows = {"adamw": base_rows, "nexus_adamw": nexus_rows}
  if control_rows:
    arm_rows["nexuscontrol_adamw"] = control_rows
  if grid_rows:
    arm_rows["nexus_adamw_g0.1_k2"] = grid_rows
  arms = nexus_runs.arm_table(get_config("runlocal"))
  runs = {a: {str(i): _record(*r) for i, r in enumerate(rows)} for a, rows in arm_rows.items()}
  return {
    "config": config,
    "arms": arms,
    "runs": runs,
    "sources": ["prose", "code", "math"],
    "token_budget": 1920,
  }


def _verdicts(comparison):
  return {k: v["verdict"] for k, v in comparison["claims"].items()}


FIVE = range(5)


def test_every_claim_held_when_nexus_is_clearly_better_in_every_seed():
  base = [(2.00 + 0.01 * i, 2.50 + 0.02 * i, 0.10, 1.00) for i in FIVE]
  # Same loss within 0.1%, cosine +0.1, minima −0.1, OOD −0.1 (± a little per seed).
  nexus = [(2.00 + 0.01 * i, 2.40 + 0.02 * i + 0.003 * i, 0.20, 0.90 - 0.01 * i) for i in FIVE]
  c = nexus_claims.compare(_result(nexus, base))["nexus_adamw-vs-adamw"]
  assert c["kind"] == "nexus_vs_base"
  assert _verdicts(c) == dict.fromkeys(
    ["equal_loss", "higher_cosine", "closer_minima", "lower_ood"], "held"
  )
  ood = c["claims"]["lower_ood"]
  assert ood["statistic"] == pytest.approx(-0.1 + 0.003 * 2)
  assert ood["ci_low"] < ood["statistic"] < ood["ci_high"] < 0
  assert set(stats.VERDICT_KEYS) <= set(ood) and ood["n_seeds"] == 5
  assert (ood["n_pairs_used"], ood["n_pairs_excluded"]) == (5, 0)
  assert "γ = 0.02, k = 3" in ood["condition"]
  assert c["claims"]["equal_loss"]["statistic"] == pytest.approx(0.0, abs=1e-12)


def test_opposite_noisy_and_too_few_seeds_give_did_not_hold_and_inconclusive():
  base = [(2.00, 2.50, 0.10, 1.00)] * 5
  # Loss 10% worse, OOD clearly worse, cosine noise around 0, minima the same.
  nexus = [(2.20, 2.60, 0.10 + d, 1.00) for d in (0.05, -0.05, 0.04, -0.04, 0.0)]
  c = nexus_claims.compare(_result(nexus, base))["nexus_adamw-vs-adamw"]
  assert _verdicts(c) == {
    "equal_loss": "did not hold",
    "higher_cosine": "inconclusive",
    "closer_minima": "inconclusive",
    "lower_ood": "did not hold",
  }
  two = nexus_claims.compare(_result(nexus[:2], base[:2]))["nexus_adamw-vs-adamw"]
  assert set(_verdicts(two).values()) == {"inconclusive"}  # No interval from 2 seeds.
  # A seed missing in one arm is excluded and counted.
  result = _result(nexus, base)
  del result["runs"]["nexus_adamw"]["4"]
  rec = nexus_claims.compare(result)["nexus_adamw-vs-adamw"]["claims"]["lower_ood"]
  assert (rec["n_seeds"], rec["n_pairs_used"], rec["n_pairs_excluded"]) == (4, 4, 1)


def test_control_and_grid_comparisons_and_exact_match_claims():
  base = [(2.00, 2.50, 0.10, 1.00)] * 5
  nexus = [(2.00, 2.40 - 0.01 * i, 0.20, 0.90) for i in FIVE]
  control = [(2.00, 2.50 + 0.01 * i, 0.10, 1.00) for i in FIVE]
  result = _result(nexus, base, control, grid_rows=nexus)
  for arm in ("adamw", "nexus_adamw"):
    for i in range(5):
      acc = 0.5 if arm == "adamw" else 0.6 + 0.01 * i
      result["runs"][arm][str(i)]["exact_match"] = {"worked": {"accuracy": acc}}
  comps = nexus_claims.compare(result)
  assert {k: c["kind"] for k, c in comps.items()} == {
    "nexus_adamw-vs-adamw": "nexus_vs_base",
    "nexus_adamw-vs-nexuscontrol_adamw": "nexus_vs_control",
    "nexuscontrol_adamw-vs-adamw": "control_vs_base",
    "nexus_adamw_g0.1_k2-vs-adamw": "grid",
  }
  attribution = comps["nexus_adamw-vs-nexuscontrol_adamw"]["claims"]["lower_ood"]
  assert attribution["verdict"] == "held" and attribution["reference"] == "nexuscontrol_adamw"
  assert comps["nexuscontrol_adamw-vs-adamw"]["claims"]["lower_ood"]["verdict"] == "did not hold"
  em = comps["nexus_adamw-vs-adamw"]["claims"]["higher_exact_match_worked"]
  assert em["verdict"] == "held" and em["statistic"] == pytest.approx(0.12)
  records = nexus_claims.verdict_records(comps)
  assert len(records) == sum(len(c["claims"]) for c in comps.values())
  json.dumps(records)  # machine-readable as it stands


def test_report_and_plots_from_a_result(tmp_path):
  base = [(2.00 + 0.01 * i, 2.50, 0.10, 1.00) for i in FIVE]
  nexus = [(2.01, 2.40 + 0.01 * i, 0.20, 0.90) for i in FIVE]
  result = _result(nexus, base, control_rows=base, grid_rows=nexus)
  result["comparisons"] = nexus_claims.compare(result)
  result["verdicts"] = nexus_claims.verdict_records(result["comparisons"])
  plots = nexus_plots.write_plots(result, tmp_path)
  assert [p.name for p in plots] == [
    "losses.png",
    "grad_cosine_matrices.png",
    "training_curves.png",
    "minima.png",
    "grid_id_vs_ood.png",
  ]
  assert all(p.stat().st_size > 5000 for p in plots)
  report = nexus_report.render(result, plots)
  assert "| grad_cosine | 0.100 ± 0.000 | 0.200 ± 0.000 | 0.100 ± 0.000 | 0.200 ± 0.000 |" in report
  assert "| prose–code | prose–math | code–math |" in report.replace("arm | ", "")
  assert all(stats.describe(r) in report for r in result["verdicts"])
  assert "Nexus(AdamW, γ=0.1, k=2)" in report and "Control(AdamW)" in report
  assert "### Nexus vs its control" in report
  row = next(
    r for r in report.splitlines() if r.startswith("| Nexus(AdamW, γ=0.1, k=2) | 0.1 | 2 |")
  )
  assert row.count("|") == 6 and "(lower: held)" in row  # the γ × k table's row


def test_train_commands_and_bad_configs(tmp_path):
  config = get_config("runlocal")
  arms = {a.name: a for a in nexus_runs.arms(config)}
  assert list(arms) == ["adamw", "nexus_adamw", "nexuscontrol_adamw", "nexus_adamw_g0.1_k2"]
  cmd = nexus_runs.train_command(config, arms["nexuscontrol_adamw"], 2, tmp_path)
  assert (
    f"--config={REPO / 'configs/gpt2.py'}:size=tiny,optimizer=adamw,steps=6,batch=6,seq_len=32,"
    "similarity=3,nexus,inner_lr=0.02,inner_steps=3,runlocal" in cmd
  )
  assert "--config.seed=2" in cmd and "--config.optimizer.nexus.control=random_direction" in cmd
  grid = " ".join(nexus_runs.train_command(config, arms["nexus_adamw_g0.1_k2"], 0, tmp_path))
  assert "inner_lr=0.1,inner_steps=2" in grid and "control" not in grid
  assert ",nexus" not in " ".join(nexus_runs.train_command(config, arms["adamw"], 0, tmp_path))
  assert nexus_runs.parse_arm("nexus_lion_k") == ("lion_k", "nexus")
  assert nexus_runs.parse_arm("nexuscontrol_muon") == ("muon", "control")
  assert get_config("full").seeds.count("+") >= 4  # ≥ 5 seeds
  for field, value, message in (
    ("arms", "", "config.arms is empty"),
    ("seeds", "0+x", "not '+'-separated integers"),
    ("batch", 8, "multiple of the 3 sources"),
    ("grid.bases", "muon", "grid.bases names 'muon', which is not in config.arms"),
    ("grid.inner_steps", "0", "integers >= 1"),
  ):
    bad = get_config("runlocal")
    section, _, key = field.rpartition(".")
    (bad[section] if section else bad)[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
      nexus_runs.arms_and_seeds(bad)
  for field, value, message in (
    ("control", "none", "control='none' is impossible"),
    ("exact_match.max_new_question", 40, "leaves no room for the prompt"),
  ):
    bad = get_config("runlocal")
    section, _, key = field.rpartition(".")
    (bad[section] if section else bad)[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
      nexus_mixture.check_config(bad, tmp_path)


def test_run_without_similarity_logging_is_refused(tmp_path):
  (tmp_path / "summary.json").write_text(json.dumps({"final_val_loss": {}}))
  (tmp_path / "metrics.jsonl").write_text("")
  with pytest.raises(ValueError, match="trained without similarity_every"):
    nexus_mixture.run_record(tmp_path, {}, None)


# 12 tiny runs: 20 min on a shared 2-core CPU (load ~14), run with `pytest -m slow` (the verdict logic above is in the default run).
@pytest.mark.slow
def test_command_end_to_end(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "analysis.nexus_mixture",
    "--config=configs/nexus_mixture.py:runlocal,seeds=0+1+2",
    f"--workdir={tmp_path}",
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads((tmp_path / "nexus.json").read_text())
  arms = {"adamw", "nexus_adamw", "nexuscontrol_adamw", "nexus_adamw_g0.1_k2"}
  assert set(out["runs"]) == arms and out["sources"] == ["prose", "code", "math"]
  assert out["token_budget"] == 6 * 6 * 32  # steps × batch × seq_len, the same for every arm
  control_config = json.loads((tmp_path / "runs/nexuscontrol_adamw_s0/config.json").read_text())
  assert control_config["optimizer"]["nexus"]["control"] == "random_direction"
  run = out["runs"]["nexus_adamw"]["0"]
  assert set(run["val_loss"]) == {"prose", "code", "math", "mean"}
  assert set(run["ood_loss"]) == {"code_ood", "math_ood", "mean"}
  assert len(run["grad_cosine"]) == 3 and [s for s, _ in run["grad_cosine_curve"]] == [3, 6]
  m = run["minima"]
  assert len(m["pairwise_distance"]) == 3 and m["pairwise_distance"][0][0] == 0.0
  assert all(d > 0 for d in m["loss_drop"])  # fine-tuning on one source lowers its loss
  for prompt in ("worked", "question"):
    em = run["exact_match"][prompt]
    assert em["n"] == 8 and 0.0 <= em["accuracy"] <= 1.0
  kinds = {c["kind"] for c in out["comparisons"].values()}
  assert kinds == {"nexus_vs_base", "nexus_vs_control", "control_vs_base", "grid"}
  records = out["verdicts"]
  assert all(set(stats.VERDICT_KEYS) <= set(r) for r in records)
  assert all(r["verdict"] in (stats.HELD, stats.NOT_HELD, stats.INCONCLUSIVE) for r in records)
  assert all(r["n_seeds"] == 3 for r in records)
  # The saved verdicts are the ones the saved runs give, and the report states them.
  assert nexus_claims.compare(out) == out["comparisons"]
  report = (tmp_path / "report.md").read_text()
  assert "## Verdicts" in report and all(stats.describe(r) in report for r in records)
  for name in ("losses.png", "grad_cosine_matrices.png", "training_curves.png", "minima.png"):
    assert (tmp_path / name).stat().st_size > 5000
  assert (tmp_path / "grid_id_vs_ood.png").stat().st_size > 5000
  # A rerun trains nothing and gives the same numbers.
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and again.stderr.count("finished before, skipped") == 12
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
