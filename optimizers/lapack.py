"""LAPACK calls on stacks of matrices, safe on a CPU backend with several devices.

Why: jaxlib 0.10.2's CPU LAPACK kernels (QR, SVD, sytrd, ...) split a batched call into
chunks on XLA:CPU's intra-op thread pool and block until they finish; the pool's threads also
run the devices' programs, so with several (virtual) CPU devices all of them can end up
waiting on chunks no free thread will run: a deadlock (gdb: every pool thread in
jax::ParallelBatchMap). Measured here on 8 virtual devices, Dion's sharded step hung in about 1
run in 4 with a batched QR and in 0 of 8 with one matrix per call. jaxlib 0.11 compiles that
parallel path out of its open-source builds. So on CPU with more than one device a stack is
factored one matrix at a time (`jax.lax.map`); everywhere else (GPU, TPU, one CPU device)
the batched call runs as it is.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _one_at_a_time() -> bool:
  return jax.default_backend() == "cpu" and jax.device_count() > 1


def per_matrix(fn: Callable) -> Callable:
  """``fn`` of a stack (..., m, n) returning arrays with the same leading axes, mapped one
  matrix at a time on a multi-device CPU backend (module docstring). Under `jax.vmap` too:
  a plain vmap of the per-matrix map would batch its calls back into one batched LAPACK
  call, so there the vmapped axis joins the stack (`jax.custom_batching.custom_vmap`).
  custom_vmap has no reverse-mode autodiff; the optimizers' updates are never differentiated."""

  def by_matrix(x):
    batch = x.shape[:-2]
    if math.prod(batch) <= 1:
      return fn(x)
    out = jax.lax.map(fn, x.reshape(-1, *x.shape[-2:]))
    return jax.tree.map(lambda o: o.reshape(*batch, *o.shape[1:]), out)

  vmappable = jax.custom_batching.custom_vmap(by_matrix)

  @vmappable.def_vmap
  def _batched(axis_size, in_batched, x):
    del axis_size, in_batched  # One argument: vmap only calls this when x is batched, axis 0.
    out = vmappable(x)
    return out, jax.tree.map(lambda _: True, out)

  @functools.wraps(fn)
  def mapped(x):
    return vmappable(x) if _one_at_a_time() else fn(x)

  return mapped


# The factorizations the optimizers' updates call, each as per_matrix.
svd = per_matrix(functools.partial(jnp.linalg.svd, full_matrices=False))  # (u, s, vt)
singular_values = per_matrix(functools.partial(jnp.linalg.svd, compute_uv=False))
qr = per_matrix(jnp.linalg.qr)  # (q, r), reduced
tridiagonal = per_matrix(jax.lax.linalg.tridiagonal)  # (a, d, e, taus) of a symmetric matrix
