"""Run with 8 virtual CPU devices (tests/test_relu2_seed_sharding.py): trains a relu2
config whose 8 seeds are spread over the devices, and prints the compiled step's
collective counts and the per-seed final losses as JSON."""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)  # before any backend exists

from configs import relu2 as relu2_config  # noqa: E402
from optimizers import factory  # noqa: E402
from tests.config_overrides import config_with  # noqa: E402
from training import (  # noqa: E402
  hlo,
  relu2,
  runner,  # noqa: E402
  tasks,
)


def main(workdir: str, variant: str) -> None:
  config = config_with(relu2_config.get_config, variant)
  summary = runner.run(config, workdir)
  exp = tasks.relu2_experiment(config)
  tx = factory.make_optimizer(config.optimizer, config.num_steps)
  mesh = relu2.seed_mesh(config.num_seeds)
  state = relu2.place(relu2.init_state(exp, tx, config), mesh)
  record = jax.jit(jax.vmap(relu2.finite.empty_record))(state["seeds"]["params"])
  step = relu2.make_train_step(exp, tx, config.seed_chunk_size, mesh)
  text = step.lower(state, record).compile().as_text()
  counts = {k: dict(v) for k, v in hlo.collective_counts(text).items()}
  shards = len(state["seeds"]["params"]["hidden"]["kernel"].sharding.device_set)
  print(json.dumps({"final": summary["final"], "collectives": counts, "devices": shards}))


if __name__ == "__main__":
  main(*sys.argv[1:])
