"""analysis.train_runs: runs what is unfinished, skips what is finished (after
checking its config), and names a failed run with its log's last lines."""

import json
import sys

import pytest

from analysis import train_runs


def _fake_run(out, fail=False):
  """A stand-in for `python train.py`: writes config.json and summary.json."""
  code = (
    f"import json, pathlib, sys; d = pathlib.Path({str(out)!r}); "
    "(d / 'config.json').write_text(json.dumps({'seed': 3, 'optimizer': {'name': 'muon'}})); "
    + (
      "print('loss is NaN at step 7'); sys.exit(3)"
      if fail
      else "(d / 'summary.json').write_text('{}')"
    )
  )
  return [sys.executable, "-c", code]


def test_runs_then_skips_and_checks_finished_configs(tmp_path):
  runs = [(tmp_path / f"r{i}", _fake_run(tmp_path / f"r{i}")) for i in range(3)]
  done = train_runs.train_runs(runs, parallel=2)
  assert sorted(done) == ["r0", "r1", "r2"] and all(isinstance(v, float) for v in done.values())
  assert (tmp_path / "r0.log").exists()
  good = {"seed": 3, "optimizer.name": "muon"}
  again = train_runs.train_runs(runs, expected={d: good for d, _ in runs})
  assert again == {"r0": "skipped", "r1": "skipped", "r2": "skipped"}
  with pytest.raises(
    train_runs.TrainingFailed,
    match=r"r0 was trained with optimizer.name='muon' \(the config asks 'adamw'\)",
  ):
    train_runs.train_runs(runs, expected={runs[0][0]: {**good, "optimizer.name": "adamw"}})


def test_a_failed_run_is_named_with_its_log(tmp_path):
  runs = [(tmp_path / "bad", _fake_run(tmp_path / "bad", fail=True))]
  with pytest.raises(train_runs.TrainingFailed, match=r"(?s)bad failed \(exit 3\).*NaN at step 7"):
    train_runs.train_runs(runs)
  assert json.loads((tmp_path / "bad" / "config.json").read_text())["seed"] == 3


def test_a_finished_run_is_checked_against_every_field_its_command_builds(tmp_path):
  # A changed default in a config file (here: the run was trained at another b2 than
  # configs/relu2.py's) refuses the reuse though the experiment passed no such override.
  from training import cli
  from training import workdir as wd

  d = tmp_path / "run"
  cmd = train_runs.train_py_command("configs/relu2.py", "runlocal,optimizer=adamw", d)
  config = wd.config_json(cli.config_from_args(cmd))
  d.mkdir()
  (d / "summary.json").write_text("{}")
  (d / "config.json").write_text(json.dumps(config))
  assert train_runs.train_runs([(d, cmd)]) == {"run": "skipped"}
  config["optimizer"]["b2"] = 0.5
  del config["optimizer"]["eps"]  # a field the run predates: absent counts when it is set
  (d / "config.json").write_text(json.dumps(config))
  with pytest.raises(train_runs.TrainingFailed, match="b2=0.5") as info:
    train_runs.train_runs([(d, cmd)])
  assert "eps='<absent>'" in str(info.value)


def test_a_run_from_before_an_added_field_is_reused_at_its_default(tmp_path):
  # GPT-2 runs trained before init_from existed have no such field: its default ("", -1)
  # is what they did, so they are reused; a run the field changes is still refused.
  from training import cli
  from training import workdir as wd

  d = tmp_path / "run"
  cmd = train_runs.train_py_command("configs/gpt2.py", "runlocal", d)
  config = wd.config_json(cli.config_from_args(cmd))
  del config["init_from"], config["init_from_step"]
  d.mkdir()
  (d / "summary.json").write_text("{}")
  (d / "config.json").write_text(json.dumps(config))
  assert train_runs.train_runs([(d, cmd)]) == {"run": "skipped"}
  spawned = train_runs.train_py_command("configs/gpt2.py", "runlocal", d, ["--config.init_from=x"])
  with pytest.raises(train_runs.TrainingFailed, match="init_from=''"):
    train_runs.train_runs([(d, spawned)])


def test_runs_sharing_the_cores_get_a_share_of_the_blas_threads(tmp_path, monkeypatch):
  for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setattr(train_runs.os, "cpu_count", lambda: 8)
  assert train_runs.blas_threads(1) == {}
  assert train_runs.blas_threads(2)["OPENBLAS_NUM_THREADS"] == "4"
  assert train_runs.blas_threads(16)["OMP_NUM_THREADS"] == "1"
  # What the runs see: the cap, unless the user set one.
  monkeypatch.setenv("MKL_NUM_THREADS", "3")
  code = (
    "import os, pathlib; d = pathlib.Path({!r}); (d / 'v').write_text(os.environ['{}']); "
    "(d / 'summary.json').write_text('{{}}')"
  )
  runs = [
    (tmp_path / f"r{i}", [sys.executable, "-c", code.format(str(tmp_path / f"r{i}"), k)])
    for i, k in enumerate(("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))
  ]
  train_runs.train_runs(runs, parallel=2)
  assert (tmp_path / "r0" / "v").read_text() == "4" and (tmp_path / "r1" / "v").read_text() == "3"
