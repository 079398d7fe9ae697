"""optimizers.lapack: on a multi-device CPU backend every factorization runs one matrix per
LAPACK call, also under (nested) vmap, with the batched call's results; elsewhere it is the
batched call itself."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers import lapack

LAPACK_PRIMITIVES = ("svd", "qr", "householder_product", "geqrf", "geqp3", "tridiagonal")
STACK = jax.random.normal(jax.random.key(0), (2, 3, 6, 4))


def lapack_operand_shapes(fn, x) -> list[tuple]:
  """Shapes of the matrix operand of every LAPACK primitive in fn's jaxpr (sub-jaxprs too)."""
  shapes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in LAPACK_PRIMITIVES:
        shapes.append(tuple(eqn.invars[0].aval.shape))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)

  # A new function each time: make_jaxpr caches traces by function, and the path taken
  # depends on `_one_at_a_time`, which the tests patch.
  walk(jax.make_jaxpr(lambda y: fn(y))(x).jaxpr)
  return shapes


@pytest.fixture
def one_at_a_time(monkeypatch):
  monkeypatch.setattr(lapack, "_one_at_a_time", lambda: True)


@pytest.mark.parametrize("name", ["svd", "singular_values", "qr"])
@pytest.mark.parametrize("vmaps", [0, 1, 2])
def test_one_matrix_per_call_with_the_batched_results(one_at_a_time, name, vmaps):
  fn = getattr(lapack, name)
  batched = {
    "svd": lambda x: jnp.linalg.svd(x, full_matrices=False),
    "singular_values": lambda x: jnp.linalg.svd(x, compute_uv=False),
    "qr": jnp.linalg.qr,
  }[name]
  f = fn
  for _ in range(vmaps):
    f = jax.vmap(f)
  shapes = lapack_operand_shapes(f, STACK)
  assert shapes and all(s == (6, 4) for s in shapes), shapes
  got, want = jax.jit(f)(STACK), batched(STACK)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5), got, want)


def test_tridiagonal_one_matrix_per_call_under_vmap(one_at_a_time):
  sym = STACK[..., :4, :] @ jnp.swapaxes(STACK[..., :4, :], -1, -2)  # (2, 3, 4, 4)
  f = jax.vmap(lapack.tridiagonal)
  assert set(lapack_operand_shapes(f, sym)) == {(4, 4)}
  d_got, d_want = f(sym)[1], jax.lax.linalg.tridiagonal(sym)[1]
  np.testing.assert_allclose(d_got, d_want, rtol=1e-5, atol=1e-5)


def test_one_device_keeps_the_batched_call():
  assert not lapack._one_at_a_time()  # This process has one CPU device.
  assert lapack_operand_shapes(lapack.svd, STACK) == [(2, 3, 6, 4)]
