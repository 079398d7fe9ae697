"""The command line the experiment commands share (analysis.sweep,
analysis.gpt2_spectra, analysis.nexus_mixture): --config (an ml_collections
config file, fields overridable) and --workdir, orbax's restore logs filtered,
and bad input turned into one line instead of a traceback.

    if __name__ == "__main__":
      experiment_cli.main("analysis.nexus_mixture", "configs/nexus_mixture.py[:VARIANT]",
                          "Output directory (...).", run, errors=(ValueError,))

The flags are defined inside main(), at startup only: importing an experiment
module (tests, next to train.py's flags) adds no global flags.
"""

import json
import logging as pylogging
import sys
from collections.abc import Callable
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags


def quiet_orbax(record) -> bool:
  """Logging filter: orbax logs every restore at INFO and WARNING (read-only
  managers); keep its errors only."""
  return record.levelno >= pylogging.ERROR or "/orbax/" not in record.pathname


def main(
  name: str, config_hint: str, workdir_help: str, run: Callable, errors: tuple[type[Exception], ...]
) -> None:
  """Defines --config and --workdir, parses them and calls run(config, workdir);
  an exception of ``errors`` exits with "NAME: message"."""
  config_flag = config_flags.DEFINE_config_file(
    "config",
    None,
    f"Experiment config: {config_hint}; override fields with --config.a.b=V.",
    lock_config=True,
  )
  workdir_flag = flags.DEFINE_string("workdir", None, workdir_help)
  # absl's --help lists the main module's key flags; these are defined here,
  # so register them for the command's module (sys.argv[0]) too.
  for flag in ("config", "workdir"):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[flag])

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments {argv[1:]}; see --help.")
    logging.get_absl_logger().addFilter(quiet_orbax)
    if config_flag.value is None or workdir_flag.value is None:
      raise app.UsageError(f"--config={config_hint} and --workdir=DIR are required; see --help.")
    try:
      run(config_flag.value, workdir_flag.value)
    except errors as e:
      raise SystemExit(f"{name}: {e}") from None

  app.run(_main)


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
