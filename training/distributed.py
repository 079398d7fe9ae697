"""Multi-host start-up: `jax.distributed.initialize` when, and only when, a run spans processes.

Three ways a run becomes multi-process, in this order (`plan`):

1. explicit arguments: config fields ``distributed.coordinator_address``
   ("host:port" of process 0), ``num_processes``, ``process_id`` and
   optionally ``local_device_ids`` ("0,1"), each falling back to jax's own
   environment variables (JAX_COORDINATOR_ADDRESS, JAX_LOCAL_DEVICE_IDS) and
   to JAX_NUM_PROCESSES / JAX_PROCESS_ID, which this module reads;
2. a detected cluster with more than one process (``distributed.cluster =
   "auto"``, the default): jax's own detection, i.e. Cloud TPU pods (GCE and
   GKE), SLURM, Open MPI and Kubernetes indexed jobs; jax fills in the rest;
3. otherwise one process, and jax.distributed is never touched: the laptop path
   (and a single-host TPU VM, and a one-task SLURM allocation) runs as before.

It must run before anything touches a backend (jax.devices(), a computation),
so `training.run` calls it first. Timeouts are config fields: jax's defaults
(300 s to start, 100 s heartbeat) make a broken start hang for minutes.

A dead peer: jax's runtime aborts the survivors (SIGABRT, a C++ log) only after
its heartbeat timeout, and a survivor blocked in a collective with a dead peer
would wait forever. So every process also runs a `Watchdog` thread that beats
a counter in the coordinator's key-value store and reads the others'; a peer
whose counter has not moved for ``peer_timeout`` seconds, or a lost
coordinator, makes the process print one line and exit (status 3) at once,
before the runtime's abort. A finished process marks itself done first, so its
peers do not take its exit for a death.
"""

import os
import sys
import threading
import time

import jax
import numpy as np

from training.errors import ConfigError, one_line

ENV = {
  "coordinator_address": "JAX_COORDINATOR_ADDRESS",
  "num_processes": "JAX_NUM_PROCESSES",
  "process_id": "JAX_PROCESS_ID",
  "local_device_ids": "JAX_LOCAL_DEVICE_IDS",
}
# The config's "unset" value per field (process_id 0 is the coordinator, a real value).
UNSET = {"coordinator_address": "", "num_processes": 0, "process_id": -1, "local_device_ids": ""}
EXIT_PEER_LOST = 3


def _explicit(dist, environ) -> dict:
  """The four arguments from the config, else the environment (None: unset)."""
  out = {}
  for field, var in ENV.items():
    value = dist.get(field) if dist is not None else None
    if value is None or value == UNSET[field]:
      value = environ.get(var) or None
    out[field] = value
  return out


def _int(value, field: str) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ConfigError(f"distributed.{field}={value!r} is not an int.") from None


def detected_cluster():
  """jax's detected cluster environment with more than one process, else None
  (opt-in methods such as mpi4py are not tried)."""
  from jax._src import clusters  # jax's own detection, the one initialize() uses

  for env in clusters.ClusterEnv._cluster_types:
    if not env.opt_in_only_method and env.is_env_present():
      try:
        count = env.get_process_count()
      except Exception:  # A partial environment (e.g. a login shell's leftovers).
        continue
      return env if count and count > 1 else None
  return None


def plan(dist, environ=None, cluster=detected_cluster) -> dict | None:
  """The keyword arguments of jax.distributed.initialize, or None for one process.
  ConfigError (one line) for an incomplete or inconsistent explicit setting."""
  environ = os.environ if environ is None else environ
  timeouts = {
    "initialization_timeout": int(dist.get("initialization_timeout", 300)) if dist else 300,
    "heartbeat_timeout_seconds": int(dist.get("heartbeat_timeout", 100)) if dist else 100,
  }
  args = _explicit(dist, environ)
  if args["coordinator_address"] is not None:
    if args["num_processes"] is None or args["process_id"] is None:
      raise ConfigError(
        f"distributed.coordinator_address={args['coordinator_address']} needs "
        "distributed.num_processes and distributed.process_id too (or JAX_NUM_PROCESSES "
        "and JAX_PROCESS_ID)."
      )
    n, pid = _int(args["num_processes"], "num_processes"), _int(args["process_id"], "process_id")
    if not 0 <= pid < n:
      raise ConfigError(
        f"distributed.process_id={pid} must be in [0, num_processes={n}); "
        "give each process its own id, 0 on the coordinator."
      )
    if ":" not in str(args["coordinator_address"]):
      raise ConfigError(
        f"distributed.coordinator_address={args['coordinator_address']} needs a port: HOST:PORT."
      )
    ids = args["local_device_ids"]
    local = None if ids is None else [_int(x, "local_device_ids") for x in str(ids).split(",")]
    return {
      "coordinator_address": str(args["coordinator_address"]),
      "num_processes": n,
      "process_id": pid,
      "local_device_ids": local,
      "cluster_detection_method": "deactivate",  # the arguments are complete
      **timeouts,
    }
  if dist is not None and dist.get("cluster", "auto") == "off":
    return None
  return timeouts if cluster() is not None else None


class Watchdog(threading.Thread):
  """Beats this process's counter and checks the peers' (module docstring)."""

  def __init__(self, client, process_id: int, num_processes: int, peer_timeout: float):
    super().__init__(daemon=True, name="optiscape-peer-watchdog")
    self.client, self.pid, self.n = client, process_id, num_processes
    self.peer_timeout = float(peer_timeout)
    self.interval = max(0.2, self.peer_timeout / 10)
    self.done = threading.Event()

  def _key(self, kind: str, pid: int) -> str:
    return f"optiscape/{kind}/{pid}"

  def finish(self) -> None:
    """Tells the peers this process ends normally, and stops beating."""
    self.done.set()
    try:
      self.client.key_value_set(self._key("done", self.pid), "1", allow_overwrite=True)
    except Exception:
      pass

  def run(self) -> None:
    start = time.monotonic()
    seen = {p: (None, start) for p in range(self.n) if p != self.pid}
    beat = 0
    while not self.done.is_set():
      beat += 1
      now = time.monotonic()
      try:
        self.client.key_value_set(self._key("alive", self.pid), str(beat), allow_overwrite=True)
        for p, (value, since) in list(seen.items()):
          if _try_get(self.client, self._key("done", p)) is not None:
            seen.pop(p)
            continue
          new = _try_get(self.client, self._key("alive", p))
          if new != value:
            seen[p] = (new, now)
          elif now - since > self.peer_timeout and not self.done.is_set():
            _die(
              f"process {p} of {self.n} stopped answering for {self.peer_timeout:.0f} s, so "
              f"process {self.pid} stops too; rerun the same command on every host to resume "
              "from the last checkpoint."
            )
      except Exception as e:
        if not self.done.is_set():
          _die(
            f"process {self.pid} lost the coordinator (process 0): {one_line(e)}; rerun the "
            "same command on every host to resume from the last checkpoint."
          )
      self.done.wait(self.interval)


def _try_get(client, key: str):
  """The value, or None while the key does not exist (NOT_FOUND)."""
  try:
    return client.key_value_try_get(key)
  except Exception as e:
    if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
      return None
    raise


def _die(message: str) -> None:
  # os._exit: the main thread may be blocked in a collective that never returns.
  sys.stderr.write(f"train.py: {message}\n")
  sys.stderr.flush()
  os._exit(EXIT_PEER_LOST)


_WATCHDOG: list[Watchdog] = []


def initialize(config) -> bool:
  """Starts jax.distributed if `plan` says so (and the peer watchdog); True when
  this run is multi-process. Idempotent within a process."""
  dist = config.get("distributed")
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  kwargs = plan(dist)
  if kwargs is None:
    return False
  # A peer that never comes (or a wrong address) makes jax abort from C++ at the
  # initialization timeout; this timer ends the process with one line just before.
  timeout = kwargs["initialization_timeout"]
  timer = threading.Timer(
    max(0.5, timeout - 1.0),
    _die,
    (
      f"not every process joined within distributed.initialization_timeout={timeout} s "
      f"(coordinator {kwargs.get('coordinator_address', 'from the cluster')}); start all "
      "processes with the same coordinator_address and num_processes.",
    ),
  )
  timer.daemon = True
  timer.start()
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # A malformed argument jax refuses in Python: one line.
    raise ConfigError(
      f"jax.distributed.initialize failed: {one_line(e)}; check distributed.coordinator_address "
      "and that every process started with the same num_processes."
    ) from None
  finally:
    timer.cancel()
  from jax._src import distributed as jax_distributed  # the client jax started

  peer_timeout = float(dist.get("peer_timeout", 30)) if dist is not None else 30.0
  watchdog = Watchdog(
    jax_distributed.global_state.client, jax.process_index(), jax.process_count(), peer_timeout
  )
  watchdog.start()
  _WATCHDOG.append(watchdog)
  return True


def global_array(x, sharding) -> jax.Array:
  """A host array that every process holds whole (a batch, a validation set) as a
  global jax.Array: each process places only the rows of its own devices. With
  one process it is jax.device_put."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  return jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index])


def to_host(tree):
  """Every leaf as a numpy array, gathered from all processes when sharded across them."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(tree, tiled=True)


def finish() -> None:
  """At the normal end of a multi-process run: the peers are told, then jax's
  shutdown barrier waits for all of them."""
  for watchdog in _WATCHDOG:
    watchdog.finish()
  _WATCHDOG.clear()
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()
