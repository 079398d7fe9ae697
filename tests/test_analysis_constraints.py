"""λ·K*(θ) per leaf against numpy, per optimizer, along paths; projections."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import constraints
from tests.references import reference_dual_norms, reference_project_spectral

LAM = 0.5


def _relu2_like():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  return {
    "hidden": {"kernel": 2 * jax.random.normal(k1, (6, 8)), "bias": jax.random.normal(k2, (8,))},
    "head": {"kernel": jax.random.normal(k3, (8, 1))},
  }


def test_linf_and_spectral_values_match_numpy():
  p = _relu2_like()
  want = reference_dual_norms(p["hidden"]["kernel"])
  linf = constraints.constraint_values(p, "l1", LAM)
  np.testing.assert_allclose(linf["hidden"]["kernel"], LAM * want["l1"], rtol=1e-6)
  spec = constraints.constraint_values(p, "nuclear", LAM)
  np.testing.assert_allclose(spec["hidden"]["kernel"], LAM * want["nuclear"], rtol=1e-5)


def test_optimizer_names_map_to_their_ks():
  p = _relu2_like()
  assert jax.tree.leaves(constraints.optimizer_ks("adamw", p)) == ["l1"] * 3
  assert jax.tree.leaves(constraints.optimizer_ks("lion_k-l1", p)) == ["l1"] * 3
  # Muon takes the hidden matrix only; relu2's "head" goes to AdamW (ℓ∞).
  muon = constraints.optimizer_ks("muon", p)
  assert muon["hidden"]["kernel"] == "nuclear"
  assert muon["head"]["kernel"] == "l1" and muon["hidden"]["bias"] == "l1"
  values = constraints.optimizer_constraints("muon", p, LAM)
  np.testing.assert_allclose(
    values["hidden"]["kernel"],
    LAM * np.linalg.norm(np.asarray(p["hidden"]["kernel"]), 2),
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    values["head"]["kernel"], LAM * np.abs(np.asarray(p["head"]["kernel"])).max(), rtol=1e-6
  )
  with pytest.raises(ValueError, match="Unknown optimizer"):
    constraints.optimizer_ks("adagrad", p)
  with pytest.raises(ValueError, match="Unknown K"):
    constraints.optimizer_ks("lion_k-l7", p)


def test_config_constraints_divide_by_muons_shape_scale():
  p = _relu2_like()
  values = constraints.config_constraints({"name": "muon", "weight_decay": LAM}, p)
  # hidden kernel (6, 8): scale √max(1, 8/6).
  scale = np.sqrt(8 / 6)
  np.testing.assert_allclose(
    values["hidden"]["kernel"],
    LAM / scale * np.linalg.norm(np.asarray(p["hidden"]["kernel"]), 2),
    rtol=1e-5,
  )
  assert float(values["head"]["kernel"]) == 0.0  # AdamW side without weight decay.


def test_constraints_along_path_are_convex_in_t():
  a = _relu2_like()
  b = jax.tree.map(lambda x: -0.5 * x[::-1], a)
  ts = jnp.linspace(0, 1, 21)
  along = constraints.constraints_along_path("linear", a, b, ts, "nuclear", LAM)
  v = np.asarray(along["hidden"]["kernel"])
  assert v.shape == (21,)
  np.testing.assert_allclose(
    v[0], constraints.constraint_values(a, "nuclear", LAM)["hidden"]["kernel"], rtol=1e-6
  )
  # A norm along a segment is convex: below the chord.
  assert np.all(v <= (1 - ts) * v[0] + ts * v[-1] + 1e-5)
  assert v.min() < min(v[0], v[-1]) - 1e-3  # Non-trivially so here.


def test_projections_land_on_the_ball_and_fix_points_inside():
  p = _relu2_like()
  projected = constraints.project_onto_ball(p, "nuclear", LAM)
  w = np.asarray(p["hidden"]["kernel"])
  np.testing.assert_allclose(
    projected["hidden"]["kernel"], reference_project_spectral(w, 2.0), atol=1e-5
  )
  assert (
    float(constraints.max_constraint(constraints.constraint_values(projected, "nuclear", LAM)))
    <= 1 + 1e-5
  )
  clipped = constraints.project_onto_ball(p, "l1", LAM)
  np.testing.assert_allclose(clipped["hidden"]["kernel"], np.clip(w, -2, 2))
  inside = jax.tree.map(lambda x: 0.01 * x, p)
  for k in ("l1", "nuclear"):
    again = constraints.project_onto_ball(inside, k, LAM)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), again, inside)
  with pytest.raises(ValueError, match="No projection"):
    constraints.project_onto_ball(p, "schatten", LAM)
  with pytest.raises(ValueError, match="pytree like params"):
    constraints.constraint_values(p, {"hidden": "l1"}, LAM)
