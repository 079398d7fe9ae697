r"""Trains a model from an ml_collections config into a workdir; resumes it if it exists.

    python train.py --config=configs/relu2.py:optimizer=muon,width=512 \
        --workdir=runs/muon512 --config.seed=3

The work is done by the `training` package (training.run); this file only
wires the flags to it and turns a user error into one line.
"""

import logging as pylogging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import training
from training import cli

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment config: configs/FILE.py[:VARIANT], e.g. "
  "configs/relu2.py:optimizer=muon,width=512 (see the file's docstring for its variants). "
  "Override any field with --config.a.b=V.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Directory of the run: config.json, checkpoints/, metrics.jsonl, "
  "tensorboard/, summary.json (training/workdir.py). Created; resumed if it has checkpoints.",
)
_OVERRIDE = flags.DEFINE_bool(
  "override_config",
  False,
  "Resume a workdir even though its saved config differs "
  "(the old config.json is kept as config.replaced_TIME.json).",
)


def _quiet_orbax(record) -> bool:
  """Logging filter: orbax logs every save at INFO; keep its warnings only.
  A full disk is reported once, in one line (training.checkpoints.disk_full)."""
  if "/orbax/" in record.pathname or "asyncio" in record.pathname:
    return record.levelno >= pylogging.WARNING and "No space left" not in str(record.msg)
  return True


def main(argv):
  logging.get_absl_logger().addFilter(_quiet_orbax)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; see --help.")
  config = _CONFIG.value  # Its file was checked by cli.parse_flags.
  if config is None or _WORKDIR.value is None:
    sys.exit(
      "train.py: both --config=configs/FILE.py[:VARIANT] and --workdir=DIR "
      "are required; see --help."
    )
  status = cli.handle(
    "train.py", lambda: training.run(config, _WORKDIR.value, _OVERRIDE.value)
  ).get("status")
  if status == "interrupted":
    sys.exit(130)  # Ctrl-C: saved; the shell's convention for SIGINT.


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("train.py"))
