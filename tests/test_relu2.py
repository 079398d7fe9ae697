"""models/relu2.py: the formula, the parameter names Muon relies on, the init scales."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import relu2
from optimizers.muon import muon_labels


def _manual(params, x, parametrization, use_bias=True):
  """Σⱼ c·aⱼ·relu(s·wⱼ·x + bⱼ), written out."""
  d, m = params["hidden"]["kernel"].shape
  _, _, s, c = relu2.scales(parametrization, d, m)
  pre = s * x @ params["hidden"]["kernel"]
  if use_bias:
    pre = pre + params["hidden"]["bias"]
  return c * np.maximum(pre, 0) @ params["head"]["kernel"]


@pytest.mark.parametrize("parametrization", relu2.PARAMETRIZATIONS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_the_formula(parametrization, use_bias):
  model = relu2.make_model(
    16, out_dim=3, use_bias=use_bias, parametrization=parametrization, bias_init_std=0.5
  )
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  expected_keys = {"kernel", "bias"} if use_bias else {"kernel"}
  assert set(params["hidden"]) == expected_keys and set(params["head"]) == {"kernel"}
  assert params["hidden"]["kernel"].shape == (4, 16)
  assert params["head"]["kernel"].shape == (16, 3)
  out = model.apply({"params": params}, x)
  assert out.shape == (5, 3)
  np.testing.assert_allclose(
    out,
    _manual(jax.tree.map(np.asarray, params), np.asarray(x), parametrization, use_bias),
    rtol=1e-5,
    atol=1e-6,
  )


@pytest.mark.parametrize(
  "parametrization,w_std,a_std",
  [("standard", 0.25, 1 / 32), ("ntk", 1.0, 1.0), ("mean_field", 1.0, 1.0)],
)
def test_init_scales(parametrization, w_std, a_std):
  model = relu2.make_model(1024, parametrization=parametrization)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 16)))["params"]
  np.testing.assert_allclose(np.std(params["hidden"]["kernel"]), w_std, rtol=0.05)
  np.testing.assert_allclose(np.std(params["head"]["kernel"]), a_std, rtol=0.1)
  np.testing.assert_array_equal(params["hidden"]["bias"], 0.0)


def test_mean_field_output_shrinks_with_width():
  # Mean-field's 1/m output makes the function at init O(1/√m); NTK's is O(1).
  x = jax.random.normal(jax.random.PRNGKey(1), (256, 8))

  def out_std(parametrization, width):
    model = relu2.make_model(width, parametrization=parametrization)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    return float(jnp.std(model.apply({"params": params}, x)))

  assert out_std("mean_field", 4096) < 0.1 * out_std("mean_field", 16)
  assert 0.3 < out_std("ntk", 4096) / out_std("ntk", 16) < 3


def test_muon_takes_only_the_hidden_matrix():
  model = relu2.make_model(8)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 3)))["params"]
  assert muon_labels(params) == {
    "hidden": {"kernel": "muon", "bias": "adam"},
    "head": {"kernel": "adam"},
  }


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(width=0), "width must be >= 1"),
    (dict(width=4, out_dim=0), "out_dim"),
    (dict(width=4, parametrization="mup"), "Unknown relu2 parametrization 'mup'"),
  ],
)
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    relu2.make_model(**kwargs)
