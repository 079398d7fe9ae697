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

from optimizers.dion import dion
from optimizers.freon import freon
from optimizers.kaon import kaon
from optimizers.mimuon import mimuon
from optimizers.normuon import normuon
from optimizers.polargrad import polargrad
from optimizers.scion import scion
from optimizers.symmetric import symmetric_stack
from tests.owner_layout_check import TOLERANCE, compiled, counts, max_diff, params
from training import hlo, sharding

DEVICES = 8  # The mesh (1, 8) of tests/owner_layout_check.py.
DEFAULT = object()  # make(n, DEFAULT): the optimizer's own default owner_layout.


def layout(o) -> dict:
  return {} if o is DEFAULT else {"owner_layout": o}


# name -> (make(ns_steps, owner_layout), whether it uses Newton–Schulz).
ZOO = {
  "normuon": (lambda n, o: normuon(1e-2, ns_steps=n, **layout(o)), True),
  "polargrad_ns": (
    lambda n, o: polargrad(1e-2, method="newton_schulz", ns_steps=n, **layout(o)),
    True,
  ),
  "polargrad_svd": (lambda n, o: polargrad(1e-2, method="svd", **layout(o)), False),
  "scion_ns": (lambda n, o: scion(1e-2, ns_steps=n, **layout(o)), True),
  "scion_svd": (lambda n, o: scion(1e-2, method="svd", **layout(o)), False),
  "kaon": (lambda n, o: kaon(1e-2, steps=n, **layout(o)), True),
  "freon_svd": (lambda n, o: freon(1e-2, q=2 / 3, method="svd", **layout(o)), False),
  # Freon's Newton iteration is a fori_loop: GSPMD's collectives would sit inside it.
  "freon_newton": (lambda n, o: freon(1e-2, q=2 / 3, method="newton", **layout(o)), False),
  # The symmetric stack's spectral class (these leaves are "hidden": give it right_spectral).
  "symmetric": (
    lambda n, o: symmetric_stack(1e-2, matrices="right_spectral", ns_steps=n, **layout(o)),
    True,
  ),
  # MiMuon: the SVD (or the Gram eigenvalues) for the gap, then Newton–Schulz for msign.
  "mimuon_svd": (lambda n, o: mimuon(1e-2, ns_steps=n, **layout(o)), True),
  "mimuon_estimate": (lambda n, o: mimuon(1e-2, gap="estimate", ns_steps=n, **layout(o)), True),
  # The gap checked every 2nd step: its pass sits in a lax.cond beside msign's.
  "mimuon_every": (
    lambda n, o: mimuon(1e-2, gap="estimate", gap_every=2, ns_steps=n, **layout(o)),
    True,
  ),
  # Dion: no Newton–Schulz; its QR and products on whole matrices with their Q (two trees).
  "dion": (lambda n, o: dion(1e-2, **layout(o)), False),
}


def once(make_tx, p, ps, mesh) -> dict:
  """`counts` from one compile (5 steps), per_ns_step 0: for the SVD methods, where ns_steps
  is unused (a second compile would cost about a minute of CPU for the same HLO)."""
  text = compiled(make_tx(5), p, ps, mesh)[0].as_text()
  c = hlo.collective_counts(text)
  out = {k: sum(v.values()) for k, v in c.items()}
  nbytes = sum(sum(v.values()) for v in hlo.collective_bytes(text).values())
  by_op = dict(c["inside_loops"] + c["outside_loops"])
  return {**out, "by_op": by_op, "bytes": nbytes, "per_ns_step": 0.0}


if __name__ == "__main__":
  assert jax.device_count() == DEVICES
  make, uses_ns = ZOO[sys.argv[1]]
  mesh = sharding.make_mesh(1, DEVICES)
  p = params()
  ps = sharding.param_shardings(p, mesh, min_size=1024)
  assert ps["h_0"]["kernel"].spec == P("fsdp", None), ps["h_0"]["kernel"].spec
  report = {}
  for name, enabled in (("owner_layout", True), ("no_owner_layout", False)):
    report[name] = (counts if uses_ns else once)(lambda n: make(n, enabled), p, ps, mesh)
    report[name]["max_diff_vs_unsharded"] = max_diff(make(5, enabled), p, ps, mesh)
  # The default (owner_layout=None) is on under fsdp > 1: the same collectives as True.
  default = once(lambda n: make(n, DEFAULT), p, ps, mesh)
  print(json.dumps({sys.argv[1]: report}, indent=1))
  ours, theirs = report["owner_layout"], report["no_owner_layout"]
  # Freon's Newton iteration (24 coupled f32 steps) amplifies the order of the stacked sums.
  tolerance = 5 * TOLERANCE if sys.argv[1] == "freon_newton" else TOLERANCE
  for name in report:
    assert report[name]["max_diff_vs_unsharded"] < tolerance, (name, report[name])
  assert all(default[k] == ours[k] for k in ("by_op", "inside_loops", "bytes")), default
  assert ours["inside_loops"] == 0 and ours["per_ns_step"] == 0, ours
  if uses_ns:  # The check can fail: GSPMD partitions every NS matmul without the owner layout.
    assert theirs["per_ns_step"] > 0, report
  # With the owner layout each device gets whole matrices by all-to-all; without it GSPMD
  # gathers every matrix whole onto every device, or all-reduces partial products (Dion's P
  # and R; the SVD variants: 0 loops either way, so this is their check): fewer all-gathers
  # and fewer bytes delivered (no more all-gathers), or the layout did nothing.
  assert ours["bytes"] < theirs["bytes"], report
  assert ours["by_op"].get("all-gather", 0) <= theirs["by_op"].get("all-gather", 0), report
  print("OK")
  sys.exit(0)
