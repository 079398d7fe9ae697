"""Time of a GPT-2 train step with cross-fitted AdamW against optax.adamw, both
through the trainer's own step (training.gpt2_steps.make_steps) with the same
K-microbatch gradient accumulation, on the same tokens.

    python benchmarks/crossfit_step.py                       # tiny GPT-2 on this CPU
    python benchmarks/crossfit_step.py --size=small --accum=4 --modes=full,loo --out=crossfit.json

AdamW's scan sums the K gradients; crossfit's keeps each of them (the scan's
outputs, K gradients in memory) and its update reads them. Same forward+backward
work, so the ratio is crossfit's own cost: the stacked gradients and the
per-microbatch moments. The methods take turns step by step (a busy machine slows
all alike); the step time is the minimum over --steps after warm-up (the median is
printed too). Target: crossfit_adamw / AdamW ≤ 1.2.
"""

import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from models.gpt2 import CONFIGS, GPT2, init_params
from optimizers.crossfit import CROSSFIT_MODES, crossfit_adamw
from training import cli, finite
from training.gpt2_steps import make_data_mesh, make_steps

FLAGS = flags.FLAGS
TARGET = 1.2


def define_flags() -> None:
  flags.DEFINE_enum("size", "tiny", sorted(CONFIGS), "A config of models.gpt2.CONFIGS.")
  flags.DEFINE_integer("batch_size", 32, "Sequences per step (a multiple of --accum).")
  flags.DEFINE_integer("accum", 4, "Microbatches per step (K, even for cf/full).", lower_bound=2)
  flags.DEFINE_integer("seq_len", 0, "0: the config's block_size.", lower_bound=0)
  flags.DEFINE_list("modes", ["full", "loo"], f"crossfit_adamw modes to time, of {CROSSFIT_MODES}.")
  flags.DEFINE_integer(
    "steps", 10, "Timed steps per method (after 2 warm-up steps).", lower_bound=1
  )
  flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


def runner(model, tx, params, batch):
  """A function that runs one donated train step of ``tx`` (state kept inside)."""
  step, _, batched = make_steps(model, tx, make_data_mesh(), FLAGS.accum)
  inputs, targets = (jax.device_put(x, batched) for x in batch)
  box = {
    "state": {
      "step": jnp.int32(0),
      "params": jax.tree.map(jnp.copy, params),
      "opt_state": tx.init(params),
      "rng": jax.random.PRNGKey(1),
      "first_nonfinite_step": jnp.int32(-1),
    },
    "record": finite.empty_record(params),
  }

  def run():
    box["state"], box["record"], _ = step(box["state"], box["record"], inputs, targets)
    jax.block_until_ready(box["state"]["params"])

  return run


def main(argv):
  del argv
  if FLAGS.out:
    cli.handle("benchmarks/crossfit_step.py", lambda: cli.output_file(FLAGS.out))
  bad = [m for m in FLAGS.modes if m not in CROSSFIT_MODES]
  if bad:
    raise app.UsageError(f"--modes: unknown {bad}; known: {CROSSFIT_MODES}.")
  if FLAGS.batch_size % FLAGS.accum:
    raise app.UsageError(f"--batch_size={FLAGS.batch_size} is not a multiple of --accum.")
  if FLAGS.accum % 2 and {"cf", "full"} & set(FLAGS.modes):
    raise app.UsageError(f"--accum={FLAGS.accum}: modes cf and full need an even K.")
  config = CONFIGS[FLAGS.size]
  seq_len = FLAGS.seq_len or config.block_size
  model = GPT2(config)
  params = jax.jit(init_params, static_argnums=(0, 2))(model, jax.random.PRNGKey(0), seq_len)
  shape = (FLAGS.accum, FLAGS.batch_size // FLAGS.accum, seq_len + 1)
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, shape, np.int32)
  batch = (tokens[..., :-1], tokens[..., 1:])
  hyper = dict(b1=0.9, b2=0.95, weight_decay=0.1)
  txs = {"adamw": optax.adamw(3e-4, **hyper)}
  txs.update({f"crossfit_{m}": crossfit_adamw(3e-4, mode=m, **hyper) for m in FLAGS.modes})
  runners = {name: runner(model, tx, params, batch) for name, tx in txs.items()}
  times = {name: [] for name in runners}
  for i in range(FLAGS.steps + 2):
    for name, run in runners.items():  # Turns: load hits all alike.
      t = time.perf_counter()
      run()
      if i >= 2:
        times[name].append(time.perf_counter() - t)
  best = {n: min(t) for n, t in times.items()}
  median = {n: float(np.median(t)) for n, t in times.items()}
  ratio = {n: best[n] / best["adamw"] for n in runners if n != "adamw"}
  ratio_median = {n: median[n] / median["adamw"] for n in ratio}
  print(
    f"GPT-2 {FLAGS.size}: {FLAGS.batch_size} sequences × {seq_len} tokens, "
    f"K = {FLAGS.accum} microbatches, {jax.devices()[0].platform}"
  )
  for name in runners:
    extra = (
      f"   / adamw {ratio[name]:.3f} (median {ratio_median[name]:.3f})" if name in ratio else ""
    )
    print(
      f"  {name:15s} min {best[name] * 1e3:8.2f} ms   median {median[name] * 1e3:8.2f} ms{extra}"
    )
  worst = max(ratio.values())
  print(f"  worst ratio {worst:.3f}; target <= {TARGET}: {'met' if worst <= TARGET else 'NOT met'}")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(
        {
          "size": FLAGS.size,
          "batch_size": FLAGS.batch_size,
          "accum": FLAGS.accum,
          "seq_len": seq_len,
          "min_s": best,
          "median_s": median,
          "ratio_min": ratio,
          "ratio_median": ratio_median,
          "machine": platform.processor() or platform.machine(),
          "jax": jax.__version__,
          "backend": jax.default_backend(),
        },
        f,
        indent=2,
      )


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags("benchmarks/crossfit_step.py"))
