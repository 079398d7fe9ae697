"""training.run (this module, re-exported by training/__init__): check a config, claim a workdir, train or resume, summarize.

Everything that can be checked runs before the workdir or config.json is
created; config.json is written (atomically) only once the run is known to
start (its checkpoint, if any, restored under the config), so a refused
command never leaves a workdir that refuses the fix.
"""

import contextlib
import shutil
from pathlib import Path

import jax
import ml_collections
from absl import logging

from training import checkpoints, config_checks, distributed, gpt2, relu2
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
  "interrupted", "step": N} after a SIGTERM / SIGINT saved a checkpoint.

  A workdir this call created is removed again if the run fails before it
  starts (data that only building reveals as unusable, e.g. a BPE vocabulary
  the corpus cannot fill): a refused command leaves nothing behind."""
  # Before anything touches a backend (validation counts devices): a multi-host
  # GPT-2 run joins its peers here; relu2 and a laptop run stay one process.
  multi = config.model.name == "gpt2" and distributed.initialize(config)
  primary = jax.process_index() == 0
  config_checks.validate_config(config)
  workdir = resolve_workdir(workdir)
  config_checks.check_resume_config(workdir, config, override_config)
  created = not workdir.exists()
  workdir.mkdir(parents=True, exist_ok=True)
  started = []
  try:
    # One lock per run: process 0 holds it; the other processes of a multi-host
    # run share its workdir (and never write config.json, metrics or the summary).
    with wd.locked(workdir) if primary else contextlib.nullcontext():
      # Again under the lock: the config.json another process may have just written.
      diffs = config_checks.check_resume_config(workdir, config, override_config)
      if diffs:
        logging.warning("Resuming %s with a changed config: %s", workdir, "; ".join(diffs))

      def claim():
        # Called by the trainer once the newest checkpoint restored under this
        # config (its shapes and tree fit): a refused --override_config changes nothing.
        if primary:
          config_checks.write_config(workdir, config, replaced=bool(diffs))
        started.append(True)

      summary = TRAINERS[config.model.name](config, workdir, claim)
      if multi:
        distributed.finish()  # tells the peers, then waits for all of them
      return summary
  except wd.WorkdirBusy as e:
    raise UserError(str(e)) from None
  except Exception as e:
    if created and not started and primary:
      shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(e, UserError):
      raise
    if checkpoints.is_disk_full(e):  # An OSError, or orbax's ValueError around one.
      what = getattr(e, "filename", None) or "a checkpoint"
      raise checkpoints.disk_full(workdir, f"writing {what}") from None
    raise


# The name the tests and notebooks have used since the first trainer.
train_and_evaluate = run
