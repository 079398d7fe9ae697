"""analysis.gpt2_spectra: the end-to-end command on a tiny variant, and the
control that a path from a model to itself keeps its spectra."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from analysis import gpt2_spectra, gpt2_spectra_report, gpt2_spectra_stats
from analysis.spectra import STAT_NAMES
from configs import gpt2_spectra as gpt2_spectra_config
from models import gpt2
from training.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_self_path_has_constant_spectra():
  model = gpt2.GPT2(gpt2.CONFIGS["tiny"])
  params = gpt2.init_params(model, jax.random.PRNGKey(0))
  ts = np.linspace(0, 1, 5)
  spectra = gpt2_spectra.path_spectra(params, params, ts)
  assert len(spectra) == 4 * model.config.n_layer  # c_attn, attn c_proj, c_fc, mlp c_proj
  assert {gpt2_spectra.layer_type(n) for n in spectra} == set(gpt2_spectra_report.LAYER_TYPES)
  for stats in spectra.values():
    np.testing.assert_allclose(
      stats["sigma"], np.broadcast_to(stats["sigma"][0], stats["sigma"].shape), rtol=1e-5
    )
    for stat in STAT_NAMES:
      m = gpt2_spectra_report.deviation_metrics(stats[stat], ts, 0.02)
      assert m["max_rel_dev_from_interp"] < 1e-5 and m["monotone"] and not m["spike"]


def test_deviation_metrics_flag_a_spike_and_a_dip():
  ts = np.linspace(0, 1, 5)
  smooth = gpt2_spectra_report.deviation_metrics([1.0, 1.25, 1.5, 1.75, 2.0], ts, 0.02)
  assert smooth["monotone"] and not smooth["spike"] and smooth["max_rel_dev_from_interp"] < 1e-9
  spike = gpt2_spectra_report.deviation_metrics([1.0, 1.2, 3.0, 1.8, 2.0], ts, 0.02)
  assert spike["spike"] and not spike["monotone"]
  dip = gpt2_spectra_report.deviation_metrics([2.0, 1.5, 1.0, 1.5, 2.0], ts, 0.02)
  assert dip["max_rel_drop_below_endpoints"] == 0.5


# ~80 s on 2 cores (8 runs: two protocols): `pytest -m slow` (the spectra pieces are tested above).
def _spectra_command(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
  """`python -m analysis.gpt2_spectra` on the runlocal config (3 steps, 3 points)."""
  cmd = [
    sys.executable,
    "-m",
    "analysis.gpt2_spectra",
    "--config=configs/gpt2_spectra.py:runlocal,steps=3,points=3",
    *flags,
    f"--workdir={workdir}",
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_command_writes_report_json_and_plots(tmp_path):
  result = _spectra_command(tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  report = (tmp_path / "report.md").read_text()
  for text in (
    "same pairs",
    "cross pairs",
    "Same-optimizer paths",
    "Cross-optimizer paths",
    "stable_rank",
    "sigma_max",
  ):
    assert text in report
  full = json.loads((tmp_path / "spectra.json").read_text())
  assert set(full["protocols"]) == {"shared_start", "aligned"}
  # 2 seeds: no interval, every verdict inconclusive.
  assert full["verdicts"] and all(v["verdict"] == "inconclusive" for v in full["verdicts"])
  assert "Inconclusive: 2 seeds give no interval" in report
  shared = [tmp_path / "runs" / "shared" / f"{o}_s{s}" for o in ("adamw", "muon") for s in (0, 1)]
  assert all(json.loads((d / "config.json").read_text())["init_seed"] == 0 for d in shared)
  out = full["protocols"]["aligned"]
  assert len(out["ts"]) == 3 and set(out["runs"]) == {"adamw_s0", "adamw_s1", "muon_s0", "muon_s1"}
  assert set(out["summary"]) >= {"same", "cross", "cross_shared_init", "self"}
  for group in out["summary"].values():
    for stat in STAT_NAMES:
      assert {"max_rel_dev_from_interp", "num_monotone", "num_spikes"} <= set(group[stat])
  pair = out["pairs"][0]
  assert len(pair["loss"]) == 3 and "h_0/attn/c_attn/kernel" in pair["matrices"]
  assert len(pair["matrices"]["h_1/mlp/c_fc/kernel"]["singular_values"]) == 3
  # The control: a run to itself keeps every statistic.
  for p in out["pairs"]:
    if p["kind"].startswith("self"):
      for m in p["matrices"].values():
        assert all(m[stat]["max_rel_dev_from_interp"] < 1e-5 for stat in STAT_NAMES)
  for name in ("loss_along_path.png", *(f"spectra_{s}.png" for s in STAT_NAMES)):
    assert (tmp_path / f"aligned_{name}").stat().st_size > 1000
  # A rerun skips the finished runs.
  again = _spectra_command(tmp_path)
  assert again.returncode == 0 and again.stderr.count("finished before, skipped") == 8


# A trunk and 2 spawned runs (~30 s on 2 cores): `pytest -m slow`.
@pytest.mark.slow
def test_spawn_protocol_starts_every_run_from_the_trunk(tmp_path):
  flags = ("--config.protocols=spawn", "--config.optimizers=adamw")
  result = _spectra_command(tmp_path, *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  trunk = tmp_path / "runs" / "spawn" / "trunk"
  trunk_config = json.loads((trunk / "config.json").read_text())
  assert trunk_config["num_steps"] == 4 and trunk_config["seed"] == 0  # spawn_steps, init_seed
  for s in (0, 1):
    child = json.loads((tmp_path / "runs" / "spawn" / f"adamw_s{s}" / "config.json").read_text())
    assert child["init_from"] == str(trunk) and child["seed"] == s
  full = json.loads((tmp_path / "spectra.json").read_text())
  out = full["protocols"]["spawn"]
  assert set(out["runs"]) == {"adamw_s0", "adamw_s1"}  # The trunk is the parent, no endpoint.
  assert [p["kind"] for p in out["pairs"]] == ["same:adamw", "self:adamw"]
  again = _spectra_command(tmp_path, *flags)
  assert again.returncode == 0 and again.stderr.count("finished before, skipped") == 3


def _fake_result(same_bump: float, cross_bump: float) -> dict:
  """3 seeds of adamw and muon; statistics linear in t plus a bump at the midpoint."""
  ts = np.linspace(0, 1, 5)
  value = {"adamw": lambda s: 1.0 + 0.1 * s, "muon": lambda s: 2.0 + 0.1 * s}
  runs = [f"{o}_s{s}" for o in value for s in range(3)]
  pairs = []
  for i, a in enumerate(runs):
    for b in runs[i + 1 :]:
      (oa, sa), (ob, sb) = a.split("_s"), b.split("_s")
      v0, v1 = value[oa](int(sa)), value[ob](int(sb))
      bump = same_bump if oa == ob else cross_bump
      s_T = (1 - ts) * v0 + ts * v1 + bump * np.sin(np.pi * ts)
      metrics = gpt2_spectra_report.deviation_metrics(s_T, ts, 0.02)
      stat = {**metrics, "values": s_T.tolist()}
      kind = "same" if oa == ob else "cross"
      pairs.append(
        {
          "kind": f"{kind}:{oa}-{ob}",
          "a": a,
          "b": b,
          "loss_barrier": 0.0,
          "matrices": {"h_0/mlp/c_fc/kernel": dict.fromkeys(STAT_NAMES, stat)},
        }
      )
  return {"protocol": "aligned", "runs": dict.fromkeys(runs), "pairs": pairs}


def test_interval_verdicts_known_answers():
  config = gpt2_spectra_config.get_config()
  held = gpt2_spectra_stats.interval_verdicts(_fake_result(0.0, 0.0), config)
  assert {v["verdict"] for v in held} == {"held"} and len(held) == 6
  assert all(v["n_seeds"] == 3 for v in held)
  # A same-path bump of 0.5 is 5 endpoint spreads (0.1), a cross bump 0.5 of |Δ| ≈ 1.
  bad = gpt2_spectra_stats.interval_verdicts(_fake_result(0.5, 0.5), config)
  by_claim = {v["claim"]: v["verdict"] for v in bad}
  assert [k for k, v in by_claim.items() if v == "did not hold"] == [
    k for k in by_claim if "barrier" not in k
  ]


def test_bad_protocol_is_one_line_error(tmp_path):
  config = gpt2_spectra_config.get_config("runlocal")
  config.protocols = "shared_start+nope"
  with pytest.raises(UserError, match="protocols="):
    gpt2_spectra.check_config(config, tmp_path)
  assert not list(tmp_path.iterdir())
