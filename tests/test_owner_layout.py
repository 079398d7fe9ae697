"""Muon's owner layout (optimizers.owner_layout) and the HLO collective counter (training.hlo):
the counter on a known HLO text; without a mesh the owner layout is tree.map; (slow, 8 virtual
devices in a subprocess) no collective inside the Newton–Schulz iteration under FSDP, the
update equal to the unsharded one, collective counts vs optax.contrib.muon; the same for each
zoo optimizer routed through it (NorMuon, PolarGrad, Scion, MiMuon, Dion;
tests/zoo_owner_layout_check.py),
whose unsharded rules are checked against NumPy in their own test files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimizers import owner_layout
from tests import zoo_owner_layout_check as zoo_check
from tests.test_sharding import run_with_devices
from tests.zoo_owner_layout_check import ZOO
from training import hlo

HLO = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %x = f32[8] get-tuple-element((s32[], f32[8]) %p), index=1
  %ag = f32[64] all-gather(f32[8] %x), dimensions={0}
  %ar-start = f32[8] all-reduce-start(f32[8] %x), to_apply=%add
  %ar-done = f32[8] all-reduce-done(f32[8] %ar-start)
  ROOT %t = (s32[], f32[8]) tuple(s32[] %i, f32[8] %ar-done)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %a2a = f32[8] all-to-all(f32[8] %x), dimensions={0}
  %w = (s32[], f32[8]) while((s32[], f32[8]) %init), condition=%cond, body=%body
  ROOT %r = f32[8] get-tuple-element((s32[], f32[8]) %w), index=1
}
"""


def test_collective_counts_inside_and_outside_while_bodies():
  counts = hlo.collective_counts(HLO)
  assert counts["inside_loops"] == {"all-gather": 1, "all-reduce": 1}
  assert counts["outside_loops"] == {"all-to-all": 1}


def test_collective_bytes_are_the_per_device_results():
  """f32[64] all-gather 256 B, f32[8] all-reduce 32 B (in the loop); the all-to-all's 32 B; an
  async all-gather-start's (operand, result) tuple counts its result, bf16 at 2 B."""
  assert hlo.collective_bytes(HLO) == {
    "inside_loops": {"all-gather": 256, "all-reduce": 32},
    "outside_loops": {"all-to-all": 32},
  }
  start = HLO.replace(
    "%a2a = f32[8] all-to-all(f32[8] %x), dimensions={0}",
    "%ags = (bf16[8]{0}, bf16[64]{0}) all-gather-start(bf16[8]{0} %x), dimensions={0}",
  )
  assert hlo.collective_bytes(start)["outside_loops"] == {"all-gather": 128}


def test_without_a_mesh_the_owner_layout_is_tree_map():
  tree = {"a": jnp.ones((3, 4)), "b": jnp.arange(24.0).reshape(2, 3, 4)}
  out = owner_layout.tree_map(lambda x: 2 * x, tree, enabled=True)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, 2 * b), out, tree)
  assert not owner_layout.default_enabled(owner_layout.ambient_mesh())
  # Several trees in, a tuple out (MiMuon's direction and branch flag, Dion's M and Q).
  pair = owner_layout.tree_map(lambda x, y: (x + y, jnp.sum(y, (-2, -1))), tree, tree)
  np.testing.assert_array_equal(pair["b"][1], tree["b"].sum((-2, -1)))
  np.testing.assert_array_equal(pair["a"][0], 2 * tree["a"])


@pytest.mark.slow
def test_sharded_muon_has_no_collective_in_the_iteration_and_matches():
  """About 60 s: four optimizers compiled twice each on 8 virtual devices."""
  out = run_with_devices(8, "tests/owner_layout_check.py")
  print(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_sharded_zoo_has_no_collective_in_the_iteration_and_matches(name):
  """As the Muon test, one zoo optimizer per subprocess (tests/zoo_owner_layout_check.py)."""
  print(run_with_devices(zoo_check.DEVICES, "tests/zoo_owner_layout_check.py", name))
