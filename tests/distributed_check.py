"""One process of tests/test_distributed.py's localhost jobs (2 virtual CPU devices each).

    python tests/distributed_check.py PORT NUM_PROCESSES PROCESS_ID MODE

MODE "sum": starts through training.distributed, sums a global array over every
device of every process (gloo) and prints "SUM <value> <process_count>
<device_count>". MODE "die": process 1 dies hard right after start-up while
process 0 waits in a collective that can never finish: its watchdog must end it.
"""

import os
import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)  # before any backend exists, in every process

import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from training import distributed  # noqa: E402


def main(port: str, n: str, pid: str, mode: str) -> None:
  config = ml_collections.ConfigDict(
    {
      "distributed": {
        "coordinator_address": f"localhost:{port}",
        "num_processes": int(n),
        "process_id": int(pid),
        "local_device_ids": "",
        "cluster": "off",
        "initialization_timeout": 30,
        "heartbeat_timeout": 60,
        "peer_timeout": 3,
      }
    }
  )
  assert distributed.initialize(config)
  if mode == "die" and int(pid) == 1:
    os._exit(9)  # like SIGKILL: no shutdown, no done mark
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  # Each process gives its own rows: process p holds [p*2, p*2 + 1].
  local = np.arange(2, dtype=np.float32) + 2 * jax.process_index()
  x = jax.make_array_from_process_local_data(sharding, local)
  total = jax.jit(
    jnp.sum, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )(x)
  if mode == "die":  # a second collective, after the peer is gone: blocks until the watchdog
    for _ in range(1000):
      total = jax.jit(jnp.sum)(x + total)
      total.block_until_ready()
  print("SUM", float(total), jax.process_count(), jax.device_count(), flush=True)
  distributed.finish()


if __name__ == "__main__":
  main(*sys.argv[1:])
