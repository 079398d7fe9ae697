"""Tokens/s and MFU of a jitted GPT-2 train step (forward + backward + AdamW),
beside a PyTorch model of the same architecture and size in the same run.

    python benchmarks/gpt2_step.py                       # tiny and small on this CPU
    python benchmarks/gpt2_step.py --sizes=small --steps=20 --out=gpt2_step.json
    python benchmarks/gpt2_step.py --sizes=124m --seq_len=1024 --batch_size=16 \
        --dtype=bfloat16 --peak_tflops=989 --torch=false  # a GPU (H100 SXM dense bf16 peak)

MFU = flops_per_token(config, T) · tokens/s / reference FLOP rate, with
flops_per_token the nanoGPT/PaLM estimate (models/gpt2.py). The reference is
the machine's own f32 matmul rate, measured in the same loop as the steps (the
best of a 2048³ matmul and the MLP's shape), unless --peak_tflops gives an
accelerator's peak.
The PyTorch model is nanoGPT's (SDPA causal attention, tanh GELU, tied head),
with torch.optim.AdamW and torch.set_num_threads(cpu count), as XLA uses every core.
Both sides: same batch, sequence length, initialization scheme and optimizer
hyperparameters. The two take turns step by step (a busy machine slows both alike);
the step time is the minimum over --steps after warm-up (the median is printed too).
"""

import dataclasses
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from models.gpt2 import CONFIGS, GPT2, flops_per_token, init_params, loss_fn
from training import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["tiny", "small"], "Configs of models.gpt2.CONFIGS to time.")
flags.DEFINE_integer("batch_size", 0, "0: 32 for tiny, 16 otherwise.", lower_bound=0)
flags.DEFINE_integer("seq_len", 0, "0: the config's block_size.", lower_bound=0)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (params stay f32).")
flags.DEFINE_integer("steps", 10, "Timed steps per model (after 2 warm-up steps).", lower_bound=1)
flags.DEFINE_float(
  "peak_tflops",
  0.0,
  "Accelerator peak to compute MFU against (0: the measured f32 matmul rate of this machine).",
)
flags.DEFINE_enum(
  "torch",
  "auto",
  ["auto", "true", "false"],
  "Also time the PyTorch model (auto: when torch is installed).",
)
flags.DEFINE_bool("remat", False, "Rematerialize blocks (large models on small memory).")
flags.DEFINE_string("out", None, "Optional JSON file for the figures.")
flags.register_validator(
  "sizes",
  lambda v: bool(v) and all(s in CONFIGS for s in v),
  f"--sizes must be among {sorted(CONFIGS)}",
)

ADAMW = dict(lr=3e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)


def matmul_runners(d_model: int, rows: int) -> dict:
  """Jitted f32 matmuls (a square one and the MLP's shape) as runners, timed in
  turn with the train steps: the reference rate is measured under the same load."""
  runners = {}
  for m, k, n in [(2048, 2048, 2048), (rows, d_model, 4 * d_model)]:
    a = jax.random.normal(jax.random.PRNGKey(0), (m, k))
    b = jax.random.normal(jax.random.PRNGKey(1), (k, n))
    f = jax.jit(lambda a, b: a @ b)
    runners[f"matmul_{m}x{k}x{n}"] = (
      (lambda f=f, a=a, b=b: float(jax.block_until_ready(f(a, b))[0, 0])),
      2.0 * m * k * n,
    )
  return runners


def jax_stepper(config, batch_size, seq_len):
  """A function that runs one synchronous train step and returns its loss."""
  model = GPT2(config)
  params = jax.jit(init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
  opt = optax.adamw(
    ADAMW["lr"], ADAMW["b1"], ADAMW["b2"], ADAMW["eps"], weight_decay=ADAMW["weight_decay"]
  )
  state = {"params": params, "opt": opt.init(params)}

  def step(params, opt_state, inputs, targets):
    loss, grads = jax.value_and_grad(loss_fn)(params, model, inputs, targets)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (batch_size, seq_len + 1))
  inputs, targets = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])

  def run():
    state["params"], state["opt"], loss = jax.block_until_ready(
      step(state["params"], state["opt"], inputs, targets)
    )
    return float(loss)

  return run


def torch_gpt2(config):
  """nanoGPT's model.py, reduced to what a train step needs."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  F = torch.nn.functional
  d, n_head = config.d_model, config.n_head

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
      self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
      self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
      B, T, _ = x.shape
      q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
      q, k, v = (t.view(B, T, n_head, d // n_head).transpose(1, 2) for t in (q, k, v))
      y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
      x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, d))
      return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

  class GPT(nn.Module):
    def __init__(self):
      super().__init__()
      self.wte = nn.Embedding(config.vocab_size, d)
      self.wpe = nn.Embedding(config.block_size, d)
      self.h = nn.ModuleList(Block() for _ in range(config.n_layer))
      self.ln_f = nn.LayerNorm(d)
      self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
      self.lm_head.weight = self.wte.weight  # tied
      for name, p in self.named_parameters():
        if name.endswith("proj.weight"):
          nn.init.normal_(p, std=0.02 / (2 * config.n_layer) ** 0.5)
        elif p.dim() == 2:
          nn.init.normal_(p, std=0.02)
        elif name.endswith("bias"):
          nn.init.zeros_(p)

    def forward(self, idx, targets):
      x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
      for block in self.h:
        x = block(x)
      logits = self.lm_head(self.ln_f(x))
      return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

  return GPT()


def torch_stepper(config, batch_size, seq_len):
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  model = torch_gpt2(config)
  opt = torch.optim.AdamW(
    model.parameters(),
    lr=ADAMW["lr"],
    betas=(ADAMW["b1"], ADAMW["b2"]),
    eps=ADAMW["eps"],
    weight_decay=ADAMW["weight_decay"],
  )
  tokens = torch.randint(0, config.vocab_size, (batch_size, seq_len + 1))
  inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

  def run():
    loss = model(inputs, targets)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  return run


def time_interleaved(runners: dict, steps: int) -> dict:
  """Per runner: first-call seconds (compile), then min and median step time.

  The runners take turns step by step, so a busy machine slows them alike,
  and the minimum is the least disturbed step."""
  first, times, loss = {}, {k: [] for k in runners}, {}
  for name, run in runners.items():
    t0 = time.perf_counter()
    run()
    first[name] = time.perf_counter() - t0
    run()  # warm-up
  for _ in range(steps):
    for name, run in runners.items():
      t0 = time.perf_counter()
      loss[name] = run()
      times[name].append(time.perf_counter() - t0)
  return {
    name: {
      "first_s": first[name],
      "min_s": float(np.min(times[name])),
      "median_s": float(np.median(times[name])),
      "loss": loss[name],
    }
    for name in runners
  }


def want_torch() -> bool:
  if FLAGS.torch == "false":
    return False
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    if FLAGS.torch == "true":
      raise
    return False
  return jax.default_backend() == "cpu" or FLAGS.torch == "true"


def main(argv):
  del argv
  if FLAGS.out:
    cli.handle("benchmarks/gpt2_step.py", lambda: cli.output_file(FLAGS.out))
  dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
  results = {
    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
    f"{jax.device_count()}x {jax.devices()[0].device_kind}",
    "jax": jax.__version__,
    "dtype": FLAGS.dtype,
    "runs": {},
  }
  for size in FLAGS.sizes:
    config = dataclasses.replace(CONFIGS[size], dtype=dtype, remat=FLAGS.remat)
    B = FLAGS.batch_size or (32 if size == "tiny" else 16)
    T = FLAGS.seq_len or config.block_size
    fpt = flops_per_token(config, T)
    runners = {"jax": jax_stepper(config, B, T)}
    if want_torch():
      import torch  # pylint: disable=g-import-not-at-top

      runners["torch"] = torch_stepper(config, B, T)
      results["torch"] = torch.__version__
    matmuls = {} if FLAGS.peak_tflops > 0 else matmul_runners(config.d_model, B * T)
    timed = time_interleaved({**runners, **{k: f for k, (f, _) in matmuls.items()}}, FLAGS.steps)
    if FLAGS.peak_tflops > 0:
      ref, ref_name = FLAGS.peak_tflops * 1e12, f"peak {FLAGS.peak_tflops:g} TFLOP/s"
    else:
      rates = {k: flops / timed.pop(k)["min_s"] for k, (_, flops) in matmuls.items()}
      ref = max(rates.values())
      ref_name = (
        "measured f32 matmul "
        + ", ".join(f"{k} {r / 1e9:.0f}" for k, r in rates.items())
        + " GFLOP/s (best is the reference)"
      )
      results.setdefault("matmul_gflops", {})[size] = {k: r / 1e9 for k, r in rates.items()}
    print(f"{size}: B={B} T={T}, {fpt / 1e6:.1f} MFLOP/token, reference {ref_name}")
    run = {"batch_size": B, "seq_len": T, "flops_per_token": fpt, "reference_flops": ref}
    for name, t in timed.items():
      tokens_per_s = B * T / t["min_s"]
      run[name] = {**t, "tokens_per_s": tokens_per_s, "mfu": fpt * tokens_per_s / ref}
      print(
        f"  {name:6s} {tokens_per_s:10.0f} tokens/s  {t['min_s'] * 1e3:8.1f} ms/step "
        f"(median {t['median_s'] * 1e3:.1f})  MFU {run[name]['mfu']:.1%}  "
        f"(first step {t['first_s']:.1f} s, loss {t['loss']:.3f})"
      )
    if "torch" in timed:
      run["jax_over_torch"] = timed["torch"]["min_s"] / timed["jax"]["min_s"]
      print(f"  jax / torch tokens/s = {run['jax_over_torch']:.2f}  (target >= 1.0)")
    results["runs"][size] = run
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags("benchmarks/gpt2_step.py"))
