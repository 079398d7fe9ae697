r"""Trains a model from an ml_collections config into a workdir; resumes it if it exists.

    python train.py --config=configs/relu2.py:optimizer=muon,width=512 \
        --workdir=runs/muon512 --config.seed=3

The work is done by the `training` package (training.run); this file only
wires the flags to it and turns a user error into one line.
"""

import logging as pylogging
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import training
from training.errors import one_line

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
  """Logging filter: orbax logs every save at INFO; keep its warnings only."""
  return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  logging.get_absl_logger().addFilter(_quiet_orbax)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; see --help.")
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()  # The file loads lazily, on first use: fail here, in one line.
  except (OSError, ImportError, SyntaxError) as e:
    sys.exit(f"train.py: cannot load --config: {one_line(e)}")
  if config is None or _WORKDIR.value is None:
    sys.exit(
      "train.py: both --config=configs/FILE.py[:VARIANT] and --workdir=DIR "
      "are required; see --help."
    )
  try:
    status = training.run(config, _WORKDIR.value, _OVERRIDE.value).get("status")
  except training.UserError as e:
    sys.exit(f"train.py: {e}")  # One line, exit status 1, no traceback.
  if status == "interrupted":
    sys.exit(130)  # Ctrl-C: saved; the shell's convention for SIGINT.


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with bad --config flags reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # A get_config(VARIANT) error arrives wrapped with its traceback: keep the last line.
    message = [line for line in str(e).splitlines() if line.strip()][-1].strip()
  except (AttributeError, KeyError) as e:  # --config.x=v with no field x.
    text = str(e).replace("\\", "")
    name = (re.findall(r"[A-Za-z_]\w*", text) or ["?"])[0]
    args = [a for a in argv[1:] if a.startswith("--config.") and name in a.split("=")[0].split(".")]
    hint = re.search(r'Did you mean "(\w+)"', text)
    message = (
      f"unknown config field {name!r} in {' '.join(args) or argv[1:]}"
      + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
      + "; the config file's get_config defines the fields"
    )
  except (ValueError, TypeError) as e:
    message = str(e)
  sys.exit(f"train.py: bad flags: {message.rstrip('.')}. See --help.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
