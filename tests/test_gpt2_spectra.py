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

from analysis import gpt2_spectra, gpt2_spectra_report
from analysis.spectra import STAT_NAMES
from models import gpt2

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


# ~55 s on 2 cores: `pytest -m slow` (the spectra pieces are tested above).
@pytest.mark.slow
def test_command_writes_report_json_and_plots(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "analysis.gpt2_spectra",
    "--config=configs/gpt2_spectra.py:runlocal,steps=3,points=3",
    f"--workdir={tmp_path}",
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
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
  out = json.loads((tmp_path / "spectra.json").read_text())
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
    assert (tmp_path / name).stat().st_size > 1000
  # A rerun skips the finished runs.
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and again.stderr.count("finished before, skipped") == 4
