"""Helpers shared by config files: variant parsing and optimizer sections."""

import copy

import ml_collections
from ml_collections import config_dict


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses the "a=b,c=d" variant after the ":" of --config=FILE:VARIANT.

  Each value takes the type of its default (bools accept true/false/1/0); a
  bare word "x" means x=True. A default that is a type (``lr=float``) has no
  value: it is None unless given, so the config file picks its own default
  with `or_default` and a given 0 stays 0 (for the config checks to judge,
  never a silent fallback). An unknown key raises a one-line ValueError.
  """
  out = {k: None if isinstance(v, type) else v for k, v in defaults.items()}
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"Unknown config variant {key!r}; known: {sorted(defaults)}.")
    default = defaults[key]
    kind = default if isinstance(default, type) else type(default)
    if not _:
      value = "true"
    try:
      if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        out[key] = value.lower() in ("true", "1")
      elif default is None:
        out[key] = value
      else:
        out[key] = kind(value)
    except ValueError:
      raise ValueError(f"Config variant {key}={value!r} is not a {kind.__name__}.") from None
  return ml_collections.ConfigDict(out)


def or_default(value, default):
  """A variant's value if it was given (not None), else the config's default."""
  return default if value is None else value


def pack_arg(**kwargs) -> str:
  """The inverse of parse_arg (big_vision's pack_arg): pack_arg(width=16,
  runlocal=True) -> "width=16,runlocal=True", a variant for --config=FILE:VARIANT."""
  for key, value in kwargs.items():
    if any(c in str(value) for c in ",="):
      raise ValueError(f"Variant value {key}={value!r} cannot hold ',' or '='.")
  return ",".join(f"{k}={v}" for k, v in kwargs.items())


# The AdamW side of a Muon-routed optimizer: its learning rate (None: the
# section's) and, where the optimizer has one, its own weight decay.
# (Functions: a placeholder is a shared reference, so each section needs its own.)
_adam_lr = lambda: dict(adam_learning_rate=config_dict.placeholder(float))
_adam_side = lambda: dict(_adam_lr(), adam_weight_decay=0.0)

# Per optimizer: its hyperparameters (beyond SHARED_KEYS of optimizers.factory)
# with defaults, and a learning rate that works on the small relu2 tasks.
OPTIMIZER_DEFAULTS = {
  "adamw": dict(learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8),
  "lion": dict(learning_rate=1e-3, b1=0.9, b2=0.99),
  "lion_k": dict(learning_rate=1e-3, k="l1", b1=0.9, b2=0.99),
  "muon": dict(
    learning_rate=0.02,
    beta=0.95,
    nesterov=True,
    ns_steps=5,
    method="newton_schulz",
    scale="shape",
    adam_learning_rate=config_dict.placeholder(float),
    adam_b1=0.9,
    adam_b2=0.95,
    adam_weight_decay=0.0,
  ),
  "sgd": dict(learning_rate=0.1, momentum=0.9, nesterov=False),
  # The zoo: the matrix rule's own hyperparameters at the sheet's defaults
  # (../shared/OPTIMIZERS.md); the AdamW side as Muon's (constructor defaults).
  "polargrad": dict(learning_rate=0.02, beta=0.95, method="svd", polar_first=False, **_adam_side()),
  "kaon": dict(learning_rate=0.02, beta=0.95, nesterov=True, steps=5, **_adam_side()),
  "freon": dict(learning_rate=0.02, q=2 / 3, beta=0.95, method="svd", **_adam_side()),
  "normuon": dict(
    learning_rate=0.02, beta=0.95, beta2=0.95, nesterov=True, form="code", **_adam_side()
  ),
  "sf_normuon": dict(learning_rate=0.02, b1=0.9, b2=0.95, mu=0.8, **_adam_side()),
  "mimuon": dict(learning_rate=0.02, beta=0.05, tau=1e-6, gap="svd", gap_every=1, **_adam_side()),
  "dion": dict(learning_rate=0.02, rank=0.25, mu=0.95, **_adam_side()),
  "pion": dict(learning_rate=1e-2, b1=0.9, b2=0.999, rms=0.2, degree=2, side="both", **_adam_lr()),
  "scion": dict(learning_rate=0.05, momentum=0.1, constrained=True, **_adam_lr()),
  "symmetric": dict(
    learning_rate=0.02,
    beta=0.95,
    embed="right_spectral",
    head="hybrid",
    # The embedding and head classes' η (None: the section's learning_rate).
    embed_learning_rate=config_dict.placeholder(float),
    head_learning_rate=config_dict.placeholder(float),
    **_adam_side(),
  ),
  # Every mode but std needs per-microbatch gradients: GPT-2 with accum >= 2 (even for cf/full).
  "crossfit_adamw": dict(learning_rate=1e-2, mode="full", b1=0.9, b2=0.999, eps=1e-8, jensen=True),
}


def optimizer_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """The optimizer section for ``name``: shared keys, then its own defaults."""
  if name not in OPTIMIZER_DEFAULTS:
    raise ValueError(
      f"No config defaults for optimizer {name!r}; known: {sorted(OPTIMIZER_DEFAULTS)}."
    )
  section = dict(
    name=name,
    weight_decay=0.0,
    weight_decay_mask="all",
    schedule="constant",
    warmup_steps=0,
    decay_fraction=0.2,
    final_lr_fraction=0.0,
    grad_clip_norm=0.0,
  )
  section.update(copy.deepcopy(OPTIMIZER_DEFAULTS[name]))  # a placeholder is a reference
  section.update({k: v for k, v in overrides.items() if v is not None})
  return ml_collections.ConfigDict(section)
