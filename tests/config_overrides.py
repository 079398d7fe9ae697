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
