"""Multi-host start-up (training/distributed.py): when jax.distributed starts, with
which arguments, and what two localhost processes with gloo do (the slow tests)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import pytest

from training import distributed
from training.errors import UserError

REPO = Path(__file__).resolve().parents[1]
NO_CLUSTER = lambda: None  # noqa: E731
SLURM = lambda: "slurm"  # noqa: E731


def _dist(**fields):
  base = dict(
    coordinator_address="",
    num_processes=0,
    process_id=-1,
    local_device_ids="",
    cluster="auto",
    initialization_timeout=30,
    heartbeat_timeout=60,
    peer_timeout=10,
  )
  return ml_collections.ConfigDict({**base, **fields})


def test_laptop_path_never_initializes():
  assert distributed.plan(_dist(), {}, NO_CLUSTER) is None
  assert distributed.plan(None, {}, NO_CLUSTER) is None


def test_explicit_arguments_from_config_or_environment():
  kw = distributed.plan(
    _dist(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=0), {}, NO_CLUSTER
  )
  assert kw["coordinator_address"] == "10.0.0.1:1234" and kw["process_id"] == 0
  assert kw["num_processes"] == 4 and kw["local_device_ids"] is None
  assert kw["initialization_timeout"] == 30 and kw["heartbeat_timeout_seconds"] == 60
  env = {
    "JAX_COORDINATOR_ADDRESS": "h:9",
    "JAX_NUM_PROCESSES": "2",
    "JAX_PROCESS_ID": "1",
    "JAX_LOCAL_DEVICE_IDS": "0,1",
  }
  kw = distributed.plan(_dist(), env, NO_CLUSTER)
  assert (kw["num_processes"], kw["process_id"], kw["local_device_ids"]) == (2, 1, [0, 1])
  # The config wins over the environment.
  kw = distributed.plan(_dist(process_id=0), env, NO_CLUSTER)
  assert kw["process_id"] == 0


@pytest.mark.parametrize(
  "fields, message",
  [
    (dict(coordinator_address="h:1", num_processes=2), "needs distributed.num_processes and"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), r"process_id=2 must be in"),
    (dict(coordinator_address="h", num_processes=2, process_id=0), "needs a port"),
    (dict(coordinator_address="h:1", num_processes="two", process_id=0), "is not an int"),
  ],
)
def test_incomplete_explicit_settings_are_one_line(fields, message):
  with pytest.raises(UserError, match=message) as e:
    distributed.plan(_dist(**fields), {}, NO_CLUSTER)
  assert "\n" not in str(e.value)


def test_detected_cluster_lets_jax_fill_in_and_off_ignores_it():
  kw = distributed.plan(_dist(), {}, SLURM)
  assert kw == {"initialization_timeout": 30, "heartbeat_timeout_seconds": 60}
  assert distributed.plan(_dist(cluster="off"), {}, SLURM) is None


SLURM_ENV = {
  "SLURM_JOB_ID": "7",
  "SLURM_STEP_NODELIST": "node[1-2]",
  "SLURM_PROCID": "0",
  "SLURM_LOCALID": "0",
}


def test_cluster_detection_needs_more_than_one_process(monkeypatch):
  for var in SLURM_ENV:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.delenv("SLURM_NTASKS", raising=False)
  assert distributed.detected_cluster() is None  # no scheduler: the laptop path
  for var, value in SLURM_ENV.items():
    monkeypatch.setenv(var, value)
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert distributed.detected_cluster() is None  # a one-task allocation stays one process
  monkeypatch.setenv("SLURM_NTASKS", "2")
  assert distributed.detected_cluster().name == "slurm"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(mode: str, n: int = 2) -> list[subprocess.Popen]:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1")
  port = str(_free_port())
  script = str(REPO / "tests" / "distributed_check.py")
  return [
    subprocess.Popen(
      [sys.executable, script, port, str(n), str(p), mode],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for p in range(n)
  ]


@pytest.mark.slow  # two processes with gloo (about 10 s)
def test_two_processes_sum_over_every_device():
  procs = _launch("sum")
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
    assert "SUM 6.0 2 4" in out  # 0+1+2+3 from two processes × two devices


@pytest.mark.slow  # two processes with gloo; the survivor stops in seconds
def test_a_dead_peer_stops_the_other_with_one_line():
  start = time.monotonic()
  procs = _launch("die")
  out, err = procs[0].communicate(timeout=120)
  procs[1].communicate(timeout=30)
  assert procs[0].returncode == distributed.EXIT_PEER_LOST
  lines = [x for x in err.splitlines() if x.startswith("train.py:")]
  assert len(lines) == 1 and "process 1 of 2 stopped answering" in lines[0], err[-2000:]
  assert time.monotonic() - start < 90  # jax's own heartbeat (60 s here) never had to act


@pytest.mark.slow  # one process waiting for a peer that never comes
def test_a_peer_that_never_joins_is_one_line():
  code = (
    "import ml_collections\nfrom training import distributed\n"
    "distributed.initialize(ml_collections.ConfigDict({'distributed': dict("
    f"coordinator_address='localhost:{_free_port()}', num_processes=2, process_id=1, "
    "local_device_ids='', cluster='off', initialization_timeout=4, heartbeat_timeout=60, "
    "peer_timeout=3)}))\n"
  )
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  r = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
  )
  assert r.returncode == distributed.EXIT_PEER_LOST
  assert r.stderr.strip().splitlines() == [
    line for line in r.stderr.strip().splitlines() if line.startswith("train.py:")
  ]
  assert "not every process joined within" in r.stderr
