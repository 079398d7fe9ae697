"""The one command-line style of the analysis commands (connectivity, sweep,
gpt2_spectra, nexus_mixture, constraint_demo): each defines its flags in a
function called at startup only (importing a module, as the tests do next to
train.py's --config/--workdir, adds no global flags), --help lists them, orbax's
restore logs are filtered, and bad input is one line instead of a traceback.

    if __name__ == "__main__":
      experiment_cli.config_command("analysis.nexus_mixture",
                                    "configs/nexus_mixture.py[:VARIANT]",
                                    "Output directory (...).", run)

``config_command`` gives an experiment --config (an ml_collections config file,
fields overridable with --config.a.b=V) and --workdir; ``command`` takes any
flags (analysis.connectivity's --runs, --path, ...).
"""

import json
import logging as pylogging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from analysis import executors
from training import cli


def quiet_orbax(record) -> bool:
  """Logging filter: orbax logs every restore at INFO and WARNING (read-only
  managers); keep its errors only."""
  return record.levelno >= pylogging.ERROR or "/orbax/" not in record.pathname


def command(name: str, define_flags: Callable[[], Any], main: Callable[[Any], None]) -> None:
  """Runs a command: ``define_flags()`` defines its flags and returns what
  ``main`` takes (its flag holders); after parsing (a bad --config file or flag
  is one line, training.cli), main(holders) runs with orbax's logs filtered,
  and a user error (training.errors.UserError, a path's OSError) exits with
  "NAME: message"."""
  before = set(flags.FLAGS)
  holders = define_flags()
  # absl's --help lists the key flags of the main module (sys.argv[0]) only; a
  # flag defined from a helper module (here, or ml_collections' config flag)
  # is key to that helper, so register every new flag for the command.
  for flag in sorted(set(flags.FLAGS) - before):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[flag])

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments {argv[1:]}; see --help.")
    logging.get_absl_logger().addFilter(quiet_orbax)
    cli.handle(name, lambda: main(holders))

  app.run(_main, flags_parser=cli.parse_flags(name))


def config_command(name: str, config_hint: str, workdir_help: str, run: Callable) -> None:
  """An experiment command: --config and --workdir, then run(config, workdir)
  with the workdir checked first (cli.output_dir: not a file, writable)."""

  def define_flags():
    config = config_flags.DEFINE_config_file(
      "config",
      None,
      f"Experiment config: {config_hint}; override fields with --config.a.b=V.",
      lock_config=True,
    )
    return config, flags.DEFINE_string("workdir", None, workdir_help), define_executor_flags()

  def main(holders):
    config, workdir, executor = holders
    if config.value is None or workdir.value is None:
      raise app.UsageError(f"--config={config_hint} and --workdir=DIR are required; see --help.")
    configure_executor(executor)
    run(config.value, cli.output_dir(workdir.value))

  command(name, define_flags, main)


def define_executor_flags() -> dict:
  """--executor and the SLURM job's resources (analysis/executors.py)."""
  return {
    "kind": flags.DEFINE_enum(
      "executor",
      "local",
      list(executors.KINDS),
      "Where the train.py runs execute: local (subprocesses here), slurm (one SLURM job "
      "per run, through submitit), submitit_local (submitit's local executor: the SLURM "
      "code path on this machine).",
    ),
    "folder": flags.DEFINE_string(
      "executor_folder",
      "",
      "submitit's job folder (logs, pickles); default submitit/ beside the run directories.",
    ),
    "slurm_partition": flags.DEFINE_string("slurm_partition", "", "SLURM partition of the jobs."),
    "slurm_account": flags.DEFINE_string("slurm_account", "", "SLURM account to charge."),
    "timeout_min": flags.DEFINE_integer(
      "slurm_timeout_min", 0, "Job time limit in minutes (0: the partition's default)."
    ),
    "nodes": flags.DEFINE_integer(
      "slurm_nodes", 0, "Nodes per job (a multi-host GPT-2 run: one task per node)."
    ),
    "gpus_per_node": flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs per node."),
    "cpus_per_task": flags.DEFINE_integer("slurm_cpus_per_task", 0, "CPUs per task."),
    "mem_gb": flags.DEFINE_integer("slurm_mem_gb", 0, "Memory per node in GB."),
  }


def configure_executor(holders: dict) -> None:
  values = {k: h.value for k, h in holders.items()}
  executors.configure(values.pop("kind"), values.pop("folder"), **values)


def define_positive_float(name: str, default: float, help_text: str) -> flags.FlagHolder:
  """A float flag that must be finite and > 0 (absl's bounds are inclusive)."""
  holder = flags.DEFINE_float(name, default, help_text)
  flags.register_validator(
    name, lambda v: v is not None and math.isfinite(v) and v > 0, f"--{name} must be > 0"
  )
  return holder


def write_results(workdir: Path, json_name: str, result: dict, report: str) -> None:
  """WORKDIR/JSON_NAME (every number) and WORKDIR/report.md; logs the verdicts."""
  (workdir / json_name).write_text(json.dumps(result) + "\n")
  (workdir / "report.md").write_text(report)
  for v in result.get("verdicts", []):
    logging.info("%s", v)
  logging.info(
    "Wrote %s and %s (%.0f s).",
    workdir / "report.md",
    workdir / json_name,
    result.get("runtime_s", 0.0),
  )
