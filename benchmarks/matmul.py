"""The machine's plain f32 matmul FLOP rate: the reference every benchmark's
MFU-style figure divides by. Imported by the scripts beside it (run as
`python benchmarks/X.py`, so this folder is on sys.path)."""

import time

import jax
import jax.numpy as jnp


def matmul_rate(m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of a jitted (m×k)·(k×n) f32 matmul, best of ``repeats`` after a warm-up."""
  a = jax.random.normal(jax.random.PRNGKey(0), (m, k), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (k, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    best = min(best, time.perf_counter() - start)
  return 2 * m * k * n / best
