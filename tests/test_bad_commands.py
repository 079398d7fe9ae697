"""Every command as a user runs it (train.py, analysis.*, benchmarks/*, a
subprocess each): bad flags, config files and paths exit non-zero with one
line naming the field or path, no traceback, nothing created or changed; and
the faults a run must survive (a full disk, a workdir without checkpoint).
The in-process config tables: tests/test_bad_inputs.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import training
from tests.test_bad_inputs import RELU2, _write
from training import cli
from training import workdir as wd

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Every command's wiring, as a user runs it.


def _cli(*args, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  return subprocess.run(
    [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
  )


def _snapshot(path: Path) -> dict:
  if not path.exists():
    return {}
  return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _commands(tmp: Path):
  """(case, argv, words, path that must stay as it was)."""
  syntax = _write(tmp / "syntax.py", "def get_config(:\n")
  raising = _write(tmp / "raising.py", "def get_config(arg=None):\n  raise RuntimeError('boom')\n")
  spline = _write(
    tmp / "spline_sweep.py",
    "from configs import relu2_sweep\n\n\ndef get_config(arg=None):\n"
    "  c = relu2_sweep.get_config(arg)\n  c.conditions = ['spline']\n  return c\n",
  )
  (tmp / "a_file").write_text("not a directory")
  out, afile = tmp / "out", tmp / "a_file"
  train = ["train.py", f"--workdir={out}"]
  sweep = ["-m", "analysis.sweep", f"--workdir={out}"]
  spectra = ["-m", "analysis.gpt2_spectra", f"--workdir={out}"]
  nexus = ["-m", "analysis.nexus_mixture", f"--workdir={out}"]
  conn = ["-m", "analysis.connectivity"]
  demo = ["-m", "analysis.constraint_demo"]
  return [
    ("train_syntax", [*train, f"--config={syntax}"], ["syntax error", "syntax.py:1"], out),
    ("train_raising", [*train, f"--config={raising}"], ["raised RuntimeError: boom"], out),
    ("train_missing", [*train, "--config=configs/nope.py"], ["nope.py does not exist"], out),
    ("train_variant", [*train, "--config=configs/relu2.py:lr=fast"], ["lr='fast'"], out),
    (
      "train_override",
      [*train, "--config=configs/relu2.py", "--config.modle.width=3"],
      ["unknown config field 'modle'"],
      out,
    ),
    (
      "train_domain",
      [*train, f"--config={RELU2}", "--config.optimizer.b1=1.5"],
      ["optimizer.b1=1.5"],
      out,
    ),
    ("train_empty_workdir", ["train.py", f"--config={RELU2}", "--workdir="], ["empty"], out),
    (
      "train_workdir_file",
      ["train.py", f"--config={RELU2}", f"--workdir={afile}"],
      ["is a file"],
      afile,
    ),
    ("sweep_syntax", [*sweep, f"--config={syntax}"], ["syntax error"], out),
    ("sweep_variant", [*sweep, "--config=configs/relu2_sweep.py:fast"], ["'fast'"], out),
    (
      "sweep_points",
      [*sweep, "--config=configs/relu2_sweep.py:runlocal", "--config.points=1"],
      ["points=1", ">= 2"],
      out,
    ),
    (
      "sweep_run_config",
      [*sweep, "--config=configs/relu2_sweep.py:runlocal", "--config.optimizers.adamw.b2=1.5"],
      ["would fail", "optimizer.b2=1.5"],
      out,
    ),
    (
      "sweep_condition",
      [*sweep, f"--config={spline}:runlocal"],
      ["Unknown condition 'spline'"],
      out,
    ),
    (
      "sweep_workdir_file",
      ["-m", "analysis.sweep", "--config=configs/relu2_sweep.py:runlocal", f"--workdir={afile}"],
      ["is a file"],
      afile,
    ),
    ("spectra_steps", [*spectra, "--config=configs/gpt2_spectra.py:steps=0"], ["steps=0"], out),
    (
      "spectra_seeds",
      [*spectra, "--config=configs/gpt2_spectra.py:runlocal", "--config.seeds=a+b"],
      ["seeds='a+b'"],
      out,
    ),
    (
      "spectra_optimizer",
      [*spectra, "--config=configs/gpt2_spectra.py:runlocal", "--config.optimizers=adamw+adam"],
      ["adam"],
      out,
    ),
    ("nexus_raising", [*nexus, f"--config={raising}"], ["boom"], out),
    (
      "nexus_arms_twice",
      [*nexus, "--config=configs/nexus_mixture.py:runlocal", "--config.arms=adamw+adamw"],
      ["twice"],
      out,
    ),
    (
      "nexus_minima_points",
      [*nexus, "--config=configs/nexus_mixture.py:runlocal", "--config.minima.points=1"],
      ["minima.points=1"],
      out,
    ),
    (
      "nexus_batch",
      [*nexus, "--config=configs/nexus_mixture.py:runlocal", "--config.batch=7"],
      ["batch=7"],
      out,
    ),
    (
      "connectivity_missing_run",
      [*conn, f"--runs={tmp / 'none'}", f"--out={out}"],
      ["does not exist"],
      out,
    ),
    (
      "connectivity_out_file",
      [*conn, f"--runs={tmp / 'none'}", f"--out={afile}"],
      ["is a file"],
      afile,
    ),
    ("connectivity_points", [*conn, "--runs=x", f"--out={out}", "--points=1"], ["points"], out),
    ("connectivity_fit_lr", [*conn, "--runs=x", f"--out={out}", "--fit_lr=0"], ["fit_lr"], out),
    (
      "connectivity_batch",
      [*conn, f"--runs={tmp / 'none'}", f"--out={out}", "--batch_size=0"],
      ["--batch_size='0'"],
      out,
    ),
    ("connectivity_path", [*conn, "--runs=x", f"--out={out}", "--path=spline"], ["path"], out),
    ("demo_weight_decay", [*demo, "--weight_decay=0"], ["weight_decay"], out),
    ("demo_steps", [*demo, "--steps=0"], ["steps"], out),
    ("demo_out_dir", [*demo, f"--out={tmp}"], ["is a directory"], tmp / "none"),
    ("bench_gpt2_sizes", ["benchmarks/gpt2_step.py", "--sizes=huge"], ["--sizes"], out),
    ("bench_optimizer_layers", ["benchmarks/optimizer_step.py", "--layers=0"], ["layers"], out),
    ("bench_nexus_size", ["benchmarks/nexus_step.py", "--size=huge"], ["size"], out),
    ("bench_path_out_dir", ["benchmarks/path_eval.py", f"--out={tmp}"], ["is a directory"], out),
    ("bench_seeds_steps", ["benchmarks/seeds_vmap.py", "--steps=0"], ["steps"], out),
  ]


CASE_NAMES = [c[0] for c in _commands(Path("/tmp"))]
# One or two per command in the default run (a subprocess each, ~3 s); the
# whole table with `pytest -m slow`.
DEFAULT_CASES = {
  "train_syntax",
  "train_domain",
  "train_workdir_file",
  "sweep_run_config",
  "spectra_seeds",
  "nexus_arms_twice",
  "connectivity_out_file",
  "demo_out_dir",
  "bench_gpt2_sizes",
}


@pytest.fixture(scope="module")
def command_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("commands")


@pytest.mark.parametrize(
  "case", [c if c in DEFAULT_CASES else pytest.param(c, marks=pytest.mark.slow) for c in CASE_NAMES]
)
def test_every_command_refuses_bad_input_in_one_line(command_dir, case):
  _, argv, words, kept = {c[0]: c for c in _commands(command_dir)}[case]
  before = _snapshot(kept)
  result = _cli(*argv)
  assert result.returncode not in (0, None), result.stderr
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  for word in words:
    assert word in last, last
  assert _snapshot(kept) == before
  if kept.name == "out":
    assert not kept.exists()


# ---------------------------------------------------------------------------
# Faults.


@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs needs root")
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path):
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode:
    pytest.skip("mount is not permitted here")
  try:
    run = disk / "run"
    first = _cli(
      "train.py", "--config=configs/relu2.py:runlocal,steps=40,width=16", f"--workdir={run}"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "fill").write_bytes(b"\0" * (free - 200 * 1024))  # 200 KiB left
    more = ["train.py", "--config=configs/relu2.py:runlocal,steps=120,width=16", f"--workdir={run}"]
    full = _cli(*more, "--override_config")
    assert full.returncode == 1 and "Traceback" not in full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert "No space left on the device" in last and "step 40" in last and "intact" in last
    assert wd.checkpoint_steps(run) == [40]
    assert json.loads((run / wd.CONFIG_FILE).read_text())["num_steps"] == 120
    (disk / "fill").unlink()
    resumed = _cli(*more)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert wd.read_summary(run)["resumed_from_step"] == 40
  finally:
    subprocess.run(["umount", str(disk)], check=True)


def test_a_workdir_without_checkpoint_takes_the_corrected_config(tmp_path):
  config = cli.config_from_args([f"--config={RELU2}"])
  run = tmp_path / "run"
  run.mkdir()
  wd.write_json_atomic(run / wd.CONFIG_FILE, {**wd.config_json(config), "num_steps": 7})
  summary = training.run(config, run)  # no checkpoint: nothing to protect
  assert summary["num_steps"] == 20 and wd.load_config(run).num_steps == 20
