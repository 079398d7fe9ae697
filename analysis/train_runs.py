"""Launching `python train.py` runs for the experiment commands (analysis.sweep,
analysis.gpt2_spectra, analysis.nexus_mixture).

Each run is its own process and workdir: a run with a summary.json finished
before and is skipped, so a rerun of an interrupted experiment resumes (train.py
itself resumes a run from its last checkpoint). The experiments never import
train.py: its absl flags would clash with theirs.
"""

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from analysis import executors
from training import cli, config_checks
from training import workdir as wd
from training.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def train_py_command(
  config_file: str,
  variant: str,
  workdir: Path,
  flags: Sequence[str] = (),
  overrides: Mapping[str, Any] | None = None,
) -> list[str]:
  """The one shape of an experiment's `python train.py` run: the config file (relative
  to the repository) with its variant, the workdir, extra flags, then one
  --config.KEY=VALUE per override."""
  return [
    sys.executable,
    str(REPO / "train.py"),
    f"--config={REPO / config_file}:{variant}",
    *flags,
    f"--workdir={workdir}",
  ] + [f"--config.{k}={v}" for k, v in (overrides or {}).items()]


class TrainingFailed(UserError):
  """A train.py run exited non-zero or wrote no summary.json."""


def command_config(cmd: Sequence[str]) -> dict[str, Any] | None:
  """{"a.b": value} (JSON types) of the config a train.py command builds; None
  for a command that is not train.py's (the tests' stand-ins)."""
  if not any(arg.startswith("--config=") for arg in cmd):
    return None
  return wd.flatten(wd.config_json(cli.config_from_args(list(cmd))))


def check_finished_run(
  run_dir: Path, expected: Mapping[str, Any], cmd: Sequence[str] | None = None
) -> None:
  """Refuses a finished run whose config.json differs from ``expected``
  ({"a.b": value}) or, given its train.py ``cmd``, from any field of the config
  that command builds now (a changed default in a config file counts; a field
  the run predates counts unless the command leaves it None): skipping it would
  report a run the config does not ask for."""
  built = command_config(cmd) if cmd is not None else None
  if built is None and not expected:
    return  # Nothing asked of it (the tests' stand-in commands).
  flat = wd.flatten(wd.config_json(wd.load_config(run_dir)))
  for key, default in config_checks.ADDED_FIELDS.items():  # Absent there: the old behaviour.
    flat.setdefault(key, default)
  want = {k: v for k, v in (built or {}).items() if k in flat or v is not None}
  want.update(expected)
  diffs = [
    f"{k}={flat.get(k, '<absent>')!r} (the config asks {v!r})"
    for k, v in want.items()
    if flat.get(k, "<absent>") != v
  ]
  if diffs:
    raise TrainingFailed(
      f"{run_dir} was trained with {', '.join(diffs)}; use another --workdir or delete that run."
    )


def check_commands(runs: Sequence[tuple[Path, list[str]]]) -> None:
  """Every run's train.py config, built and checked as train.py would before
  the first run starts: a bad field fails in one line, not after hours."""
  for out, cmd in runs:
    if not any(arg.startswith("--config=") for arg in cmd):
      continue  # Not a train.py command (the tests' stand-ins): nothing to check.
    try:
      config_checks.validate_config(cli.config_from_args(cmd))
    except UserError as e:
      raise UserError(f"The run {Path(out).name} would fail: {e}") from None


def blas_threads(parallel: int) -> dict[str, str]:
  """Thread caps for the LAPACK/BLAS that jax's CPU SVD and eigh call, when runs share
  the cores: each run's BLAS otherwise starts a thread per core and they spin against
  each other (measured on 2 cores: two MiMuon GPT-2 runs took 47.7 s side by side, 19.4 s
  with one BLAS thread each, 14.4 s alone). XLA's own matmuls do not use them."""
  if parallel <= 1:
    return {}
  n = str(max(1, (os.cpu_count() or 1) // parallel))
  return {k: n for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def train_runs(
  runs: Sequence[tuple[Path, list[str]]],
  parallel: int = 1,
  expected: Mapping[Path, Mapping[str, Any]] | None = None,
) -> dict[str, object]:
  """Runs every (run dir, command) whose run dir has no summary.json yet,
  ``parallel`` at a time, logging to RUN_DIR.log beside the run dir; returns
  {run dir name: "skipped" | seconds}. A finished run is checked against
  ``expected[run dir]`` (check_finished_run) before it is skipped. On a failure
  the other runs get SIGTERM (train.py checkpoints and exits, so a rerun
  resumes) and TrainingFailed names the run and shows its log's last lines."""
  check_commands(runs)
  todo, done = [], {}
  for out, cmd in runs:
    if (Path(out) / wd.SUMMARY_FILE).exists():
      check_finished_run(Path(out), (expected or {}).get(out, {}), cmd)
      done[Path(out).name] = "skipped"
      logging.info("%s: finished before, skipped.", Path(out).name)
    else:
      todo.append((Path(out), cmd))
  logging.info("Training: %d runs to do, %d at a time.", len(todo), max(1, parallel))
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ),
  )
  if executors.current().kind != "slurm":  # on a cluster each run has its own node
    env.update({k: v for k, v in blas_threads(parallel).items() if k not in os.environ})
  running, finished, total = [], 0, len(todo)
  # The runs go through the experiment's executor (analysis.executors: local
  # subprocesses, or SLURM / submitit's local executor); the loop is the same.
  launch = executors.launcher(
    executors.current(), Path(todo[0][0]).parent / "submitit" if todo else REPO
  )
  while todo or running:
    while todo and len(running) < max(1, parallel):
      out, cmd = todo.pop(0)
      out.mkdir(parents=True, exist_ok=True)
      log_path = out.parent / f"{out.name}.log"
      log_path.write_text(" ".join(cmd) + "\n")
      running.append((out, launch(cmd, env, str(REPO), str(log_path)), log_path, time.time()))
    time.sleep(0.2)
    for item in list(running):
      out, run, log_path, start = item
      code = run.poll()
      if code is None:
        continue
      running.remove(item)
      if code != 0 or not (out / wd.SUMMARY_FILE).exists():
        for _, other, _, _ in running:
          other.stop()
        tail = log_path.read_text().strip().splitlines()[-5:]
        raise TrainingFailed(
          f"Training {out} failed (exit {code}); log {log_path}:\n  " + "\n  ".join(tail)
        )
      finished += 1
      done[out.name] = time.time() - start
      logging.info("Trained %s (%d/%d) in %.1f s.", out.name, finished, total, done[out.name])
  return done
