"""Where the experiments' `python train.py` runs execute: here, or on a cluster scheduler.

    --executor=local            subprocesses on this machine (the default)
    --executor=slurm            one SLURM job per run, through submitit
    --executor=submitit_local   submitit's local executor: the SLURM code path
                                (pickled job, submitit folder, job states) run as
                                local processes, so CI tests it without SLURM

Every executor runs the same command line with the same environment and log
file; `analysis.train_runs` does the rest (skip finished runs, fail fast, stop
the others). A job is only a wrapper around train.py, which checkpoints and
resumes by itself, so a sweep killed at any point (the scheduler's timeout, a
lost node, Ctrl-C) resumes by running the experiment command again.
On SLURM the job's own resources come from --slurm_* flags; a multi-host run
(GPT-2 on several nodes) is one train.py process per node, which
`training.distributed` finds through SLURM's environment.
"""

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import UserError

KINDS = ("local", "slurm", "submitit_local")


@dataclass
class Settings:
  """The executor of this process's experiment (set by analysis.experiment_cli)."""

  kind: str = "local"
  folder: str = ""  # submitit's job folder; "" = WORKDIR/submitit
  slurm: dict = field(default_factory=dict)  # submitit's slurm_* parameters


_CURRENT = Settings()


def configure(kind: str, folder: str = "", **slurm) -> None:
  if kind not in KINDS:
    raise UserError(f"--executor={kind} is not one of {', '.join(KINDS)}.")
  _CURRENT.kind, _CURRENT.folder = kind, folder
  _CURRENT.slurm = {k: v for k, v in slurm.items() if v not in (None, "", 0)}


def current() -> Settings:
  return _CURRENT


def run_logged(cmd: list[str], env: dict, cwd: str, log_path: str) -> int:
  """Runs cmd with its output appended to log_path; its exit status. (The job
  function of the submitit executors: a module-level function, so it pickles.)"""
  with open(log_path, "a") as log:
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode


class LocalRun:
  """A train.py subprocess."""

  def __init__(self, cmd, env, cwd, log_path):
    self.log = open(log_path, "a")
    self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

  def poll(self) -> int | None:
    code = self.proc.poll()
    if code is not None:
      self.log.close()
    return code

  def stop(self) -> None:
    self.proc.terminate()  # train.py saves a checkpoint on SIGTERM and exits


class SubmititRun:
  """A submitit job around `run_logged`."""

  def __init__(self, executor, cmd, env, cwd, log_path):
    self.log_path = log_path
    self.job = executor.submit(run_logged, cmd, env, cwd, log_path)

  def poll(self) -> int | None:
    if not self.job.done():
      return None
    try:
      return int(self.job.result())
    except Exception as e:  # the job itself failed: timeout, node failure, cancelled
      with open(self.log_path, "a") as log:
        log.write(f"submitit job {self.job.job_id} failed: {e}\n")
      return -1

  def stop(self) -> None:
    self.job.cancel(check=False)


def launcher(settings: Settings, default_folder: Path):
  """A function (cmd, env, cwd, log_path) -> a run with poll() and stop()."""
  if settings.kind == "local":
    return LocalRun
  import submitit  # only the cluster path needs it at import time

  folder = Path(settings.folder or default_folder)
  if settings.kind == "slurm":
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**settings.slurm)
  else:
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=int(settings.slurm.get("timeout_min", 24 * 60)))
  return lambda cmd, env, cwd, log_path: SubmititRun(executor, cmd, env, cwd, log_path)
