"""Run under 8 virtual CPU devices by tests/test_sharding.py: shardings and sharded == unsharded."""

import jax
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from optimizers.muon import muon
from training import sharding


def params():
  k = jax.random.split(jax.random.key(0), 4)
  return {
    "wte": jax.random.normal(k[0], (96, 64)),
    "h_0": {"w": jax.random.normal(k[1], (64, 256)), "b": jax.random.normal(k[2], (256,))},
    "small": jax.random.normal(k[3], (4, 4)),
  }


def check(tx, data, fsdp):
  p = params()
  mesh = sharding.make_mesh(data, fsdp)
  ps = sharding.param_shardings(p, mesh, min_size=1024)
  if fsdp > 1:
    assert ps["wte"].spec == P("fsdp", None), ps["wte"].spec
    assert ps["h_0"]["w"].spec == P(None, "fsdp")
  assert ps["small"].spec == P()
  ss = sharding.state_shardings(tx, p, ps, mesh)
  flat = jax.tree_util.tree_flatten_with_path(ss)[0]
  sharded = [sharding.leaf_name(k) for k, s in flat if s.spec != P()]
  if fsdp > 1:
    assert any(n.endswith("wte") for n in sharded), sharded
  grads = jax.tree.map(lambda x: 0.1 * jnp_cos(x), p)

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  ref_s = tx.init(p)
  ref_p, _ = step(p, ref_s, grads)
  sp = jax.device_put(p, ps)
  s0 = jax.jit(tx.init, out_shardings=ss)(sp)
  out_p, out_s = jax.jit(step, out_shardings=(ps, ss))(sp, s0, jax.device_put(grads, ps))
  assert jax.tree.all(jax.tree.map(lambda a, b: a.sharding == b, out_s, ss))
  err = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), out_p, ref_p)))
  assert err < 1e-5, err
  return err


def jnp_cos(x):
  return jax.numpy.cos(x)


if __name__ == "__main__":
  assert jax.device_count() == 8
  for name, tx in [("adamw", optax.adamw(1e-2, weight_decay=0.1)), ("muon", muon(1e-2))]:
    for data, fsdp in [(1, 8), (2, 4), (8, 1)]:
      print(name, data, fsdp, check(tx, data, fsdp))
  print("OK")
