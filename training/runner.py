"""training.run (this module, re-exported by training/__init__): check a config, claim a workdir, train or resume, summarize.

Everything that can be checked runs before the workdir or config.json is
created; config.json is written (atomically) only once the run is known to
start, so a refused command never leaves a workdir that refuses the fix.
"""

from pathlib import Path

import ml_collections

from training import config_checks, gpt2, relu2
from training import workdir as wd
from training.errors import UserError

TRAINERS = {"relu2": relu2.train, "gpt2": gpt2.train}


def resolve_workdir(workdir) -> Path:
  """The absolute workdir (orbax needs absolute paths); one line if unusable."""
  text = str(workdir)
  if not text.strip():
    raise UserError("--workdir is empty; pass a directory, e.g. --workdir=runs/NAME.")
  path = Path(text).expanduser().resolve()
  if path.exists() and not path.is_dir():
    raise UserError(f"--workdir={text} is a file, not a directory; pick another path.")
  return path


def run(config: ml_collections.ConfigDict, workdir, override_config: bool = False) -> dict:
  """Trains config in workdir (resuming it if it has a checkpoint); returns the
  summary (also in WORKDIR/summary.json), or {"status": "preempted" |
  "interrupted", "step": N} after a SIGTERM / SIGINT saved a checkpoint."""
  config_checks.validate_config(config)
  workdir = resolve_workdir(workdir)
  config_checks.check_resume_config(workdir, config, override_config)
  workdir.mkdir(parents=True, exist_ok=True)
  try:
    with wd.locked(workdir):
      # Again under the lock: the config.json another process may have just written.
      diffs = config_checks.check_resume_config(workdir, config, override_config)
      config_checks.write_config(workdir, config, replaced=bool(diffs))
      return TRAINERS[config.model.name](config, workdir)
  except wd.WorkdirBusy as e:
    raise UserError(str(e)) from None


# The name the tests and notebooks have used since the first trainer.
train_and_evaluate = run
