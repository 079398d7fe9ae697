"""Run under 8 virtual CPU devices by tests/test_owner_layout.py, one zoo optimizer per run
(argv[1], a key of ZOO): as tests/owner_layout_check.py for Muon, its update under FSDP in the
owner layout has no collective inside a loop nor per Newton–Schulz step, and equals the
unsharded one.

Prints the collective counts (owner_layout / no_owner_layout, each as owner_layout_check.counts)
and the max difference to the unsharded update. For the SVD methods "per_ns_step" is 0 by
construction (ns_steps is unused): there the test is "inside_loops" == 0, no collective inside a
loop XLA may lower the SVD to (on CPU it is a LAPACK custom call, no loop).
"""

import json
import sys

import jax
from jax.sharding import PartitionSpec as P

from optimizers.normuon import normuon
from optimizers.polargrad import polargrad
from optimizers.scion import scion
from tests.owner_layout_check import TOLERANCE, compiled, counts, max_diff, params
from training import hlo, sharding

# name -> (make(ns_steps, owner_layout), whether it uses Newton–Schulz).
ZOO = {
  "normuon": (lambda n, o: normuon(1e-2, ns_steps=n, owner_layout=o), True),
  "polargrad_ns": (
    lambda n, o: polargrad(1e-2, method="newton_schulz", ns_steps=n, owner_layout=o),
    True,
  ),
  "polargrad_svd": (lambda n, o: polargrad(1e-2, method="svd", owner_layout=o), False),
  "scion_ns": (lambda n, o: scion(1e-2, ns_steps=n, owner_layout=o), True),
  "scion_svd": (lambda n, o: scion(1e-2, method="svd", owner_layout=o), False),
}


def once(make_tx, p, ps, mesh) -> dict:
  """`counts` from one compile (5 steps), per_ns_step 0: for the SVD methods, where ns_steps
  is unused (a second compile would cost about a minute of CPU for the same HLO)."""
  c = hlo.collective_counts(compiled(make_tx(5), p, ps, mesh)[0].as_text())
  out = {k: sum(v.values()) for k, v in c.items()}
  return {**out, "by_op": dict(c["inside_loops"] + c["outside_loops"]), "per_ns_step": 0.0}


if __name__ == "__main__":
  assert jax.device_count() == 8
  make, uses_ns = ZOO[sys.argv[1]]
  mesh = sharding.make_mesh(1, 8)
  p = params()
  ps = sharding.param_shardings(p, mesh, min_size=1024)
  assert ps["h_0"]["kernel"].spec == P("fsdp", None), ps["h_0"]["kernel"].spec
  report = {}
  for name, enabled in (("owner_layout", True), ("no_owner_layout", False)):
    report[name] = (counts if uses_ns else once)(lambda n: make(n, enabled), p, ps, mesh)
    report[name]["max_diff_vs_unsharded"] = max_diff(make(5, enabled), p, ps, mesh)
  # owner_layout=None (the default) is on under fsdp > 1: the same collectives as True.
  default = once(lambda n: make(n, None), p, ps, mesh)
  print(json.dumps({sys.argv[1]: report}, indent=1))
  assert all(default[k] == report["owner_layout"][k] for k in ("by_op", "inside_loops")), default
  ours = report["owner_layout"]
  assert ours["inside_loops"] == 0 and ours["per_ns_step"] == 0, ours
  theirs = report["no_owner_layout"]
  if uses_ns:  # The check can fail: GSPMD partitions every NS matmul without the owner layout.
    assert theirs["per_ns_step"] > 0, report
  # With the owner layout each device gets whole matrices by all-to-all; without it GSPMD
  # gathers every matrix whole onto every device (the SVD variants: 0 loops either way, so
  # this is their check): fewer collectives, and fewer all-gathers, or the layout did nothing.
  assert ours["inside_loops"] + ours["outside_loops"] < (
    theirs["inside_loops"] + theirs["outside_loops"]
  ), report
  assert ours["by_op"].get("all-gather", 0) < theirs["by_op"].get("all-gather", 0), report
  for name in report:
    assert report[name]["max_diff_vs_unsharded"] < TOLERANCE, (name, report[name])
  print("OK")
  sys.exit(0)
