"""Shared by the trainer tests: a config with dotted fields overridden."""


def config_with(get_config, variant="runlocal", **fields):
  """get_config(variant) with fields overridden; ``optimizer__name="lion"`` sets
  config.optimizer.name."""
  config = get_config(variant)
  for key, value in fields.items():
    *sections, name = key.split("__")
    node = config
    for section in sections:
      node = node[section]
    node[name] = value
  return config


def unsafe_config_with(config, **fields):
  """A type-unsafe copy of ``config`` with fields overridden, so a test can
  write values the flags would refuse (wrong types, impossible values)."""
  import ml_collections

  raw = config.to_dict()
  for key, value in fields.items():
    *sections, name = key.split("__")
    node = raw
    for section in sections:
      node = node[section]
    node[name] = value
  return ml_collections.ConfigDict(raw, type_safe=False)


def assert_params_close(workdir_a, workdir_b, rtol=1e-4, atol=1e-5):
  """The final params of two workdirs agree leaf by leaf."""
  import jax
  import numpy as np

  from training import workdir as wd

  _, a = wd.load_params(workdir_a)
  _, b = wd.load_params(workdir_b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
