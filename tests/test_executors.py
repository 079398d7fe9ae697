"""The experiments' executors (analysis/executors.py) through analysis.train_runs:
submitit's local executor (the SLURM code path) runs a tiny sweep of stand-in
runs, a failed run stops the sweep with its log, and the rerun resumes."""

import sys

import pytest

from analysis import executors, train_runs
from training.errors import UserError


def _stand_in(out, fail=False):
  """A command that writes RUN/summary.json like train.py does (or fails)."""
  code = (
    (
      "import sys, pathlib; sys.exit('stand-in failed') if FAIL else "
      "pathlib.Path(OUT, 'summary.json').write_text('{}')"
    )
    .replace("FAIL", str(fail))
    .replace("OUT", repr(str(out)))
  )
  return [sys.executable, "-c", code]


@pytest.fixture
def submitit_local():
  executors.configure("submitit_local")
  yield
  executors.configure("local")


@pytest.mark.slow  # submitit starts and polls its jobs slowly (about 40 s)
def test_submitit_local_runs_a_sweep_and_a_failed_sweep_resumes(tmp_path, submitit_local):
  a, b = tmp_path / "train" / "a", tmp_path / "train" / "b"
  with pytest.raises(train_runs.TrainingFailed, match="stand-in failed"):
    train_runs.train_runs([(a, _stand_in(a)), (b, _stand_in(b, fail=True))], parallel=1)
  assert (a / "summary.json").exists() and not (b / "summary.json").exists()
  assert any((tmp_path / "train" / "submitit").iterdir())  # submitit's job folder
  done = train_runs.train_runs([(a, _stand_in(a)), (b, _stand_in(b))], parallel=2)
  assert done["a"] == "skipped" and isinstance(done["b"], float)
  assert (b / "summary.json").exists()


def test_unknown_executor_is_one_line():
  with pytest.raises(UserError, match="--executor=pbs is not one of local, slurm"):
    executors.configure("pbs")
