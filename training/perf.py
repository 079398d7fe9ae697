"""The one matmul-rate measurement: the trainer's MFU stand-in on machines
without a known peak, and the reference the benchmarks print ratios against."""

import time

import jax
import jax.numpy as jnp


def matmul_rate(
  m: int = 2048,
  k: int = 2048,
  n: int = 2048,
  repeats: int = 10,
  num_devices: int = 1,
  dtype=jnp.float32,
) -> float:
  """FLOP/s of a jitted (m×k)·(k×n) matmul on each of ``num_devices`` devices
  at once (0 = all; vmapped, so one program), best of ``repeats`` after a
  warm-up: 2·m·k·n FLOPs per device."""
  d = num_devices or jax.device_count()
  a = jax.random.normal(jax.random.PRNGKey(0), (d, m, k), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (d, k, n), dtype)
  dot = jax.jit(jax.vmap(jnp.dot))
  jax.block_until_ready(dot(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    best = min(best, time.perf_counter() - start)
  return 2.0 * m * k * n * d / best


def peak_flops(config_value: float) -> float:
  """config.peak_flops: > 0 as given, 0 = unknown (no MFU), < 0 = measured
  (all devices' 1024² f32 matmul rate; on a CPU an optimistic stand-in)."""
  if config_value >= 0:
    return config_value
  return matmul_rate(1024, 1024, 1024, repeats=5, num_devices=0)


def compiled_flops(jitted, *args) -> float:
  """FLOPs of one call of ``jitted`` on ``args``, from XLA's cost analysis of its
  compiled program (what runs, fusions included); NaN where the backend reports none."""
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # Older jax: one per program.
  return float((cost or {}).get("flops", float("nan")))
