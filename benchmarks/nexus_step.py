"""Time of a Nexus(AdamW) step with k = 3 inner steps over K = 3 sources
against AdamW with 3-microbatch gradient accumulation, on the same tokens.

    python benchmarks/nexus_step.py                      # tiny GPT-2 on this CPU
    python benchmarks/nexus_step.py --size=small --batch_size=24 --out=nexus_step.json

Both steps see one (3, B/3, T) batch: AdamW scans over the 3 microbatches,
sums the gradients and updates once; Nexus scans over its 3 inner steps, one
gradient of one source's B/3 sequences each (normalized, stepped along), and
updates once with the displacement. Same forward+backward work, so the ratio
measures Nexus's own overhead (normalizations, the copy θ̃, the pseudo-gradient).
The two take turns step by step (a busy machine slows both alike); the step
time is the minimum over --steps after warm-up (the median is printed too).
Target: Nexus / AdamW ≤ 1.10.
"""

import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from models.gpt2 import CONFIGS, GPT2, init_params, loss_fn
from optimizers.nexus import nexus
from training import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_enum("size", "tiny", sorted(CONFIGS), "A config of models.gpt2.CONFIGS.")
  flags.DEFINE_integer("batch_size", 48, "Sequences per step (a multiple of 3).", lower_bound=3)
  flags.DEFINE_integer("seq_len", 0, "0: the config's block_size.", lower_bound=0)
  flags.DEFINE_integer(
    "steps", 20, "Timed steps per method (after 2 warm-up steps).", lower_bound=1
  )
  flags.DEFINE_float("inner_learning_rate", 0.02, "Nexus's γ (> 0).", lower_bound=1e-12)
  flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


NUM_SOURCES = 3


def steppers(model, params, inputs_KxMxT, targets_KxMxT, gamma):
  """{"adamw_accum3": run one step, "nexus_adamw_k3": run one step}."""
  adamw = lambda: optax.adamw(3e-4, b1=0.9, b2=0.95, weight_decay=0.1)
  grad = jax.grad(loss_fn)

  def accum_step(params, opt_state, inputs, targets):
    def micro(g_sum, xy):
      return jax.tree.map(jnp.add, g_sum, grad(params, model, *xy)), None

    g_sum, _ = jax.lax.scan(micro, jax.tree.map(jnp.zeros_like, params), (inputs, targets))
    grads = jax.tree.map(lambda g: g / NUM_SOURCES, g_sum)
    updates, opt_state = tx_accum.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def nexus_step(params, opt_state, inputs, targets):
    grad_fn = lambda p, s: grad(p, model, inputs[s], targets[s])
    updates, opt_state = tx_nexus.update(None, opt_state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), opt_state

  tx_accum = adamw()
  tx_nexus = nexus(adamw(), inner_learning_rate=gamma, inner_steps=3, num_sources=NUM_SOURCES)
  out = {}
  for name, step, tx in (
    ("adamw_accum3", accum_step, tx_accum),
    ("nexus_adamw_k3", nexus_step, tx_nexus),
  ):
    jitted = jax.jit(step, donate_argnums=(0, 1))
    box = {"p": jax.tree.map(jnp.copy, params), "s": tx.init(params)}

    def run(jitted=jitted, box=box):
      box["p"], box["s"] = jitted(box["p"], box["s"], inputs_KxMxT, targets_KxMxT)
      jax.block_until_ready(box["p"])

    out[name] = run
  return out


def main(argv):
  del argv
  if FLAGS.out:
    cli.handle("benchmarks/nexus_step.py", lambda: cli.output_file(FLAGS.out))
  config = CONFIGS[FLAGS.size]
  seq_len = FLAGS.seq_len or config.block_size
  if FLAGS.batch_size % NUM_SOURCES:
    raise app.UsageError(f"--batch_size={FLAGS.batch_size} is not a multiple of 3.")
  model = GPT2(config)
  params = jax.jit(init_params, static_argnums=(0, 2))(model, jax.random.PRNGKey(0), seq_len)
  tokens = np.random.default_rng(0).integers(
    0, config.vocab_size, (NUM_SOURCES, FLAGS.batch_size // NUM_SOURCES, seq_len + 1)
  )
  inputs, targets = jnp.asarray(tokens[..., :-1]), jnp.asarray(tokens[..., 1:])
  runners = steppers(model, params, inputs, targets, FLAGS.inner_learning_rate)
  times = {name: [] for name in runners}
  for i in range(FLAGS.steps + 2):
    for name, run in runners.items():  # Turns: load hits both alike.
      t = time.perf_counter()
      run()
      if i >= 2:
        times[name].append(time.perf_counter() - t)
  best = {n: min(t) for n, t in times.items()}
  median = {n: float(np.median(t)) for n, t in times.items()}
  ratio, ratio_median = (
    best["nexus_adamw_k3"] / best["adamw_accum3"],
    median["nexus_adamw_k3"] / median["adamw_accum3"],
  )
  tokens_per_step = FLAGS.batch_size * seq_len
  print(
    f"GPT-2 {FLAGS.size}: {FLAGS.batch_size} sequences × {seq_len} tokens = "
    f"{tokens_per_step} tokens/step (3 sources × {FLAGS.batch_size // 3}), "
    f"{jax.devices()[0].platform}"
  )
  for name in runners:
    print(
      f"  {name:15s} min {best[name] * 1e3:8.2f} ms   median {median[name] * 1e3:8.2f} ms"
      f"   {tokens_per_step / best[name]:9.0f} tokens/s"
    )
  print(
    f"  Nexus / AdamW (min): {ratio:.3f}   (median: {ratio_median:.3f})   target <= 1.10: "
    f"{'met' if ratio <= 1.10 else 'NOT met'}"
  )
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(
        {
          "size": FLAGS.size,
          "batch_size": FLAGS.batch_size,
          "seq_len": seq_len,
          "tokens_per_step": tokens_per_step,
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
  app.run(main, flags_parser=cli.parse_flags("benchmarks/nexus_step.py"))
