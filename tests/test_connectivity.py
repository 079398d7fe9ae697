"""analysis.connectivity: the CLI on two tiny trained runs, zero barrier on identical
endpoints, fitted curves, and one-line errors for mismatched tasks and missing runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import logging

import training
from analysis import barriers, connectivity, run_reader
from configs.relu2 import get_config
from training import tasks
from training import workdir as wd

logging.set_verbosity(logging.WARNING)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two finished runs of 2 seeds each (AdamW and Muon), tiny."""
  root = tmp_path_factory.mktemp("runs")
  dirs = {}
  for optimizer in ("adamw", "muon"):
    config = get_config(f"runlocal,optimizer={optimizer},width=8,seeds=2,steps=60")
    config.optimizer.weight_decay = 1.0
    training.run(config, root / optimizer)
    dirs[optimizer] = root / optimizer
  return dirs


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run(
    [sys.executable, "-m", "analysis.connectivity", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_cli_writes_every_pair_and_plots(runs, tmp_path):
  out = tmp_path / "out"
  proc = _cli(
    f"--runs={runs['adamw']},{runs['muon']}",
    "--path=linear",
    "--points=9",
    "--align",
    f"--out={out}",
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads((out / "connectivity.json").read_text())
  assert result["path"] == "linear" and result["aligned"] is True
  assert len(result["ts"]) == 9 and result["ts"][0] == 0.0 and result["ts"][-1] == 1.0
  assert len(result["models"]) == 4
  pairs = result["pairs"]
  assert len(pairs) == 6  # C(4, 2): 1 + 1 intra-run, 4 inter-run.
  kinds = sorted((p["group"], p["kind"]) for p in pairs)
  assert kinds == sorted(
    [("adamw-adamw", "intra-run"), ("muon-muon", "intra-run")] + [("adamw-muon", "inter-run")] * 4
  )
  for p in pairs:
    assert {"run", "seed", "optimizer", "index"} <= set(p["a"])
    assert len(p["train_loss"]) == len(p["test_loss"]) == 9
    for split in ("train", "test"):
      for kind in ("mean", "linear"):
        barrier = p[f"{split}_barrier"][kind]
        assert np.isfinite(barrier["height"]) and barrier["t"] in result["ts"]
    balls = {p["a"]["optimizer"], p["b"]["optimizer"]}
    assert set(p["constraints"]) == balls
    for values in p["constraints"].values():
      assert {"at_a", "at_b", "max_along", "max_leaf_along"} <= set(values)
      assert len(values["max_leaf_along"]) == 9
    assert "hidden/kernel" in p["spectra"]
  assert set(result["groups"]) == {"adamw-adamw", "adamw-muon", "muon-muon"}
  pngs = {p.name for p in out.glob("*.png")}
  assert {
    "barrier_matrix.png",
    "loss_adamw-muon.png",
    "constraints_adamw-adamw.png",
    "spectra_muon-muon.png",
  } <= pngs
  assert all((out / name).stat().st_size > 5000 for name in pngs)


def test_identical_endpoints_have_zero_barrier(runs):
  # The same run twice: seed i of the run and seed i of its copy are one network.
  loaded = run_reader.load_runs([str(runs["adamw"]), str(runs["adamw"])])
  result = connectivity.analyze(
    loaded, "linear", points=9, align=True, include_self=True, with_spectra=False
  )
  same = [p for p in result["pairs"] if p["a"]["seed"] == p["b"]["seed"]]
  assert len(same) == 4 + 2  # 4 self pairs, 2 (seed i, its copy) pairs.
  for p in same:
    for split in ("train", "test"):
      for kind in ("mean", "linear"):
        assert abs(p[f"{split}_barrier"][kind]["height"]) < 1e-6
    assert np.ptp(p["train_loss"]) < 1e-6
  different = [p for p in result["pairs"] if p["a"]["seed"] != p["b"]["seed"]]
  assert different and all(p["same_optimizer"] for p in result["pairs"])


def test_path_losses_and_barrier_match_an_independent_evaluation(runs):
  loaded = run_reader.load_runs([str(runs["adamw"]), str(runs["muon"])])
  result = connectivity.analyze(loaded, "linear", points=5, with_spectra=False)
  pair = next(p for p in result["pairs"] if p["group"] == "adamw-muon")
  assert result["ts"][2] == 0.5
  _, adamw = wd.load_params(runs["adamw"])
  _, muon = wd.load_params(runs["muon"])
  a = wd.seed_params(adamw, pair["a"]["index"])
  b = wd.seed_params(muon, pair["b"]["index"] - 2)  # The muon run's seeds are models 2, 3.
  task = tasks.relu2_task(loaded[0].config)
  x, y = task.dataset.x_train_NxD, task.dataset.y_train_NxO
  ts = np.linspace(0, 1, 5)
  losses = []
  for t in ts:  # t = ½ among them: the midpoint of the straight line, by hand.
    theta = jax.tree.map(lambda u, v: (1 - t) * u + t * v, a, b)
    pred = np.asarray(task.model.apply({"params": theta}, x), np.float64)
    losses.append(0.5 * np.mean(np.sum((pred - y) ** 2, axis=-1)))  # The task's squared loss.
  np.testing.assert_allclose(pair["train_loss"], losses, rtol=2e-5, atol=1e-7)
  # The barriers: by hand (Entezari's linear baseline) and by the library on these losses.
  linear = np.max(np.asarray(losses) - ((1 - ts) * losses[0] + ts * losses[-1]))
  np.testing.assert_allclose(
    pair["train_barrier"]["linear"]["height"], linear, rtol=1e-4, atol=1e-7
  )
  for kind in barriers.BARRIER_KINDS:
    want = barriers.loss_barrier(np.asarray(losses, np.float32), ts, kind)
    np.testing.assert_allclose(pair["train_barrier"][kind]["height"], want.height, rtol=1e-4)
    assert pair["train_barrier"][kind]["t"] == pytest.approx(float(want.t_max))
  assert pair["train_barrier"]["linear"]["height"] > 1e-4  # Two optimizers: a real bump.


def test_fitted_curve_projected_into_ball(runs):
  loaded = run_reader.load_runs([str(runs["adamw"]), str(runs["muon"])])
  linear = connectivity.analyze(loaded, "linear", points=9, with_spectra=False)
  curve = connectivity.analyze(
    loaded, "bezier", points=9, fit_steps=60, fit_lr=0.02, project=True, with_spectra=False
  )
  assert len(curve["pairs"]) == 6 and curve["num_bends"] == 1
  for lin, cur in zip(linear["pairs"], curve["pairs"]):
    assert cur["fit"]["projected"] == cur["same_optimizer"]
    # The curve starts at the segment and lowers the loss along it.
    assert np.mean(cur["train_loss"]) <= np.mean(lin["train_loss"]) + 1e-4
    # Endpoints are the same networks on both paths.
    np.testing.assert_allclose(cur["train_loss"][0], lin["train_loss"][0], rtol=1e-5)
    if cur["same_optimizer"]:  # Inside the ball, whatever the endpoints' own value.
      ball = cur["constraints"][cur["a"]["optimizer"]]
      ends = max(max(ball["at_a"].values()), max(ball["at_b"].values()))
      assert max(ball["max_leaf_along"]) <= max(1.0, ends) + 1e-4


def test_mismatched_task_and_missing_dirs_fail_clearly(runs, tmp_path):
  other = tmp_path / "other"
  shutil.copytree(runs["muon"], other)
  config = json.loads((other / "config.json").read_text())
  config["data"]["teacher_width"] = 7
  (other / "config.json").write_text(json.dumps(config))
  with pytest.raises(run_reader.ConnectivityError, match=r"data\.teacher_width \(4 vs 7\)"):
    run_reader.load_runs([str(runs["adamw"]), str(other)])
  with pytest.raises(run_reader.ConnectivityError, match="does not exist"):
    run_reader.load_runs([str(runs["adamw"]), str(tmp_path / "nope")])
  unfinished = tmp_path / "unfinished"
  shutil.copytree(runs["adamw"], unfinished)
  (unfinished / "summary.json").unlink()
  with pytest.raises(run_reader.ConnectivityError, match="unfinished"):
    run_reader.load_runs([str(unfinished)])
  proc = _cli(f"--runs={runs['adamw']},{other}", f"--out={tmp_path / 'out'}")
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert "differ in data.teacher_width" in last and "Traceback" not in proc.stderr
