"""The optimizer as data: one config section in, one optax chain out.

A config section looks like (big_vision style, "optimizer as data")::

    optimizer.name = "muon"            # a key of OPTIMIZERS
    optimizer.learning_rate = 0.02
    optimizer.weight_decay = 0.1       # λ, multiplied by the learning rate
    optimizer.schedule = "warmup_cosine"   # a key of SCHEDULES
    optimizer.warmup_steps = 100
    optimizer.grad_clip_norm = 1.0     # 0 = no clipping
    optimizer.beta = 0.95              # everything else goes to the constructor
    optimizer.nexus.enabled = True     # optional: wrap all of the above in Nexus
    optimizer.nexus.inner_learning_rate = 0.01   # γ
    optimizer.nexus.inner_steps = 3              # k
    optimizer.nexus.normalize = "global"         # "global" | "per_tensor" | "none"
    optimizer.nexus.source_order = "random"      # "random" | "cyclic"
    optimizer.nexus.seed = 0                     # the source-order RNG

With ``nexus.enabled`` the chain (clipping, schedule, weight decay included)
becomes the outer optimizer of `optimizers.nexus.nexus`, with num_sources
passed by the caller (the trainer: the number of data sources), and its
``update`` needs ``grad_fn=grad_fn(params, source)``.

The keys in SHARED_KEYS mean the same for every optimizer; every other key is a
keyword argument of the named constructor, checked against the names its
registration accepts so a typo fails here with the list of accepted names, not
deep inside optax. Adding an optimizer is one `register_optimizer` call below:
its constructor, its hyperparameter names (default: its signature) and its
implicit bias (`optimizers.implicit_bias`), which `implicit_constraints` reads.
"""

import sys
from collections.abc import Mapping
from typing import Any

import jax
import optax

from optimizers import crossfit, domains
from optimizers import implicit_bias as bias
from optimizers.dion import dion
from optimizers.freon import freon
from optimizers.implicit_bias import Constraint, implicit_constraints
from optimizers.kaon import kaon
from optimizers.lion_k import LION_DOMAINS, LION_K_DOMAINS, lion, lion_k
from optimizers.mimuon import mimuon, muon_branch_fraction
from optimizers.muon import DOMAINS as MUON_DOMAINS
from optimizers.muon import muon
from optimizers.nexus import CONTROLS, NORMALIZATIONS, SOURCE_ORDERS, nexus
from optimizers.normuon import normuon
from optimizers.pion import pion
from optimizers.polargrad import polargrad
from optimizers.registry import (
  OPTIMIZERS,
  SHARED_KEYS,
  WEIGHT_DECAY_MASKS,
  OptimizerEntry,
  check_hyperparameters,
  get_optimizer,
  hyperparameters,
  keyword_names,
  leaf_decays,
  register_optimizer,
)
from optimizers.scion import scion
from optimizers.sf_normuon import DOMAINS as SF_NORMUON_DOMAINS
from optimizers.sf_normuon import evaluation_params as sf_evaluation_params
from optimizers.sf_normuon import sf_normuon
from optimizers.symmetric import DOMAINS as SYMMETRIC_DOMAINS
from optimizers.symmetric import symmetric_stack

# Re-exported: callers use factory.Constraint, factory.implicit_constraints, ...
__all__ = [
  "NEXUS_DEFAULTS",
  "OPTIMIZERS",
  "SCHEDULES",
  "SHARED_KEYS",
  "WEIGHT_DECAY_MASKS",
  "Constraint",
  "OptimizerEntry",
  "check_nexus_config",
  "check_optimizer_config",
  "evaluated_at",
  "evaluation_params",
  "hyperparameters",
  "implicit_constraints",
  "make_optimizer",
  "make_schedule",
  "nexus_enabled",
  "register_optimizer",
]


def _sgd(learning_rate, weight_decay=0.0, mask=None, momentum=0.0, nesterov=False):
  """SGD (with heavy-ball momentum if ``momentum`` > 0) and L2-type decay λ·θ
  added to the gradient before the learning rate, like optax's other aliases."""
  return optax.chain(
    optax.add_decayed_weights(weight_decay, mask),
    optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
  )


def _muon(learning_rate, weight_decay=0.0, mask=None, **kwargs):
  return muon(learning_rate, weight_decay=weight_decay, weight_decay_mask=mask, **kwargs)


ADAMW_DOMAINS = {
  "b1": domains.DECAY,
  "b2": domains.DECAY,
  "eps": domains.positive(),
  "eps_root": domains.nonnegative(),
  "mu_dtype": domains.DTYPE,
  "nesterov": domains.boolean(),
}
SGD_DOMAINS = {"momentum": domains.DECAY, "nesterov": domains.boolean()}

# One registration per optimizer: constructor(learning_rate, weight_decay=...,
# mask=..., **hyperparameters), its implicit bias (optimizers.implicit_bias)
# and the domain of each hyperparameter (optimizers.domains).
register_optimizer("adamw", optax.adamw, bias.ELL_INF, ADAMW_DOMAINS)
register_optimizer("lion", lion, bias.ELL_INF, LION_DOMAINS)
register_optimizer("lion_k", lion_k, bias.LION_K, LION_K_DOMAINS)
register_optimizer(
  "muon",
  _muon,
  bias.MUON,
  MUON_DOMAINS,
  hyperparameters=keyword_names(muon, "weight_decay_mask"),
  scheduled=("adam_learning_rate",),
)
register_optimizer("sgd", _sgd, bias.SGD, SGD_DOMAINS)

# The zoo (../shared/OPTIMIZERS.md): each a matrix rule on the leaves Muon's
# routing selects and AdamW on the rest; adam_learning_rate follows the schedule.
_ZOO = {
  "polargrad": (polargrad, bias.POLARGRAD),
  "kaon": (kaon, bias.KAON),
  "freon": (freon, bias.FREON),
  "normuon": (normuon, bias.NORMUON),
  "dion": (dion, bias.DION),
  "pion": (pion, bias.PION),
  "scion": (scion, bias.SCION),
}
for _name, (_constructor, _bias) in _ZOO.items():
  register_optimizer(
    _name,
    _constructor,
    _bias,
    sys.modules[_constructor.__module__].DOMAINS,
    scheduled=("adam_learning_rate",),
  )
register_optimizer(
  "mimuon",
  mimuon,
  bias.MIMUON,
  sys.modules[mimuon.__module__].DOMAINS,
  scheduled=("adam_learning_rate",),
  state_metrics={"muon_branch_fraction": muon_branch_fraction},
)
# Schedule-free: its warmup is the section's schedule (warmup_steps is a shared
# key), and evaluation, checkpoints' reports and analysis read the average x.
register_optimizer(
  "sf_normuon",
  sf_normuon,
  bias.SF_NORMUON,
  {k: v for k, v in SF_NORMUON_DOMAINS.items() if k != "warmup_steps"},
  hyperparameters=keyword_names(sf_normuon, "warmup_steps"),
  scheduled=("adam_learning_rate",),
  evaluation_params=sf_evaluation_params,
)
register_optimizer(
  "symmetric",
  symmetric_stack,
  bias.SYMMETRIC,
  SYMMETRIC_DOMAINS,
  scheduled=("adam_learning_rate", "embed_learning_rate", "head_learning_rate"),
)

# Cross-fitted AdamW: every mode but std reads the step's per-microbatch
# gradients (update(..., microbatch_grads=...)); the GPT-2 trainer gives them
# (optimizers.microbatch: the config check and the trainer's test).
register_optimizer(
  "crossfit_adamw",
  crossfit.crossfit_adamw,
  bias.CROSSFIT,
  crossfit.DOMAINS,
  needs_microbatch_grads=lambda cfg: crossfit.needs_microbatches(cfg.get("mode", "full")),
)

SCHEDULES = ("constant", "warmup_cosine", "wsd")

# The domains of the keys every optimizer section shares (SHARED_KEYS).
SHARED_DOMAINS = {
  "learning_rate": domains.positive(),
  "weight_decay": domains.nonnegative(),
  "weight_decay_mask": domains.one_of(WEIGHT_DECAY_MASKS),
  "schedule": domains.one_of(SCHEDULES),
  "warmup_steps": domains.integer(0),
  # 0 would decay in one step (the schedule's max(·, 1)); above 1, before step 0.
  "decay_fraction": domains.interval(0, 1, low_closed=False, high_closed=True),
  # Below 0 the learning rate turns negative: gradient ascent.
  "final_lr_fraction": domains.interval(0, 1, high_closed=True),
  "grad_clip_norm": domains.Domain(
    domains.nonnegative().check, "a finite number > 0, or 0 to disable clipping"
  ),
}

# The optional optimizer.nexus section: key -> default.
NEXUS_DEFAULTS = dict(
  enabled=False,
  inner_learning_rate=0.01,
  inner_steps=3,
  normalize="global",
  source_order="random",
  seed=0,
  control="none",  # a control arm of Nexus's norm without alignment (optimizers/nexus.py)
)
NEXUS_DOMAINS = {
  "enabled": domains.boolean(),
  "inner_learning_rate": domains.positive(),
  "inner_steps": domains.integer(1),
  "normalize": domains.Domain(
    lambda v: _nexus_normalize(v) in NORMALIZATIONS,
    "one of 'global', 'per_tensor', 'none'",
  ),
  "source_order": domains.one_of(SOURCE_ORDERS),
  "seed": domains.integer(0),
  "control": domains.one_of(CONTROLS),
}


def make_schedule(
  learning_rate: float,
  num_steps: int,
  schedule: str = "constant",
  warmup_steps: int = 0,
  decay_fraction: float = 0.2,
  final_lr_fraction: float = 0.0,
) -> optax.Schedule:
  """constant; warmup_cosine (linear warmup, cosine to final_lr_fraction·η at
  num_steps); wsd = warmup-stable-decay (linear warmup, constant, linear decay
  to final_lr_fraction·η over the last decay_fraction of the steps; Hu et al.,
  "MiniCPM", arXiv:2404.06395)."""
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown schedule {schedule!r}; known: {SCHEDULES}.")
  final = final_lr_fraction * learning_rate
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  if schedule == "constant":
    main = optax.constant_schedule(learning_rate)
  elif schedule == "warmup_cosine":
    main = optax.cosine_decay_schedule(
      learning_rate, max(num_steps - warmup_steps, 1), alpha=final_lr_fraction
    )
  else:
    decay_steps = max(int(round(decay_fraction * num_steps)), 1)
    stable_steps = max(num_steps - warmup_steps - decay_steps, 0)
    main = optax.join_schedules(
      [
        optax.constant_schedule(learning_rate),
        optax.linear_schedule(learning_rate, final, decay_steps),
      ],
      [stable_steps],
    )
  if warmup_steps <= 0:
    return main
  return optax.join_schedules([warmup, main], [warmup_steps])


def check_optimizer_config(opt_config: Mapping[str, Any]) -> None:
  """Raises ValueError (one line) on an unknown name, a key without a domain or
  a value outside it, or options the constructor refuses (an unknown K, an
  unknown orthogonalization method): everything before training starts."""
  name = opt_config.get("name")
  get_optimizer(name)
  if "learning_rate" not in opt_config:
    raise ValueError("Config field optimizer.learning_rate is missing; add it to the config.")
  for key, domain in SHARED_DOMAINS.items():
    if key in opt_config:
      domains.check_value("optimizer", key, opt_config[key], domain)
  check_nexus_config(opt_config.get("nexus"))
  check_hyperparameters(name, opt_config)
  try:  # Building is cheap (no tracing) and runs the constructors' own checks.
    _make_outer(opt_config, num_steps=1)
  except (TypeError, ValueError) as e:
    raise ValueError(f"optimizer {name!r}: {str(e).splitlines()[0]}") from None


def nexus_enabled(opt_config: Mapping[str, Any]) -> bool:
  section = opt_config.get("nexus")
  return bool(section and dict(section).get("enabled", False))


def check_nexus_config(section) -> None:
  """Raises ValueError (one line) on a bad optimizer.nexus section (None = absent)."""
  if section is None:
    return
  section = dict(section)
  unknown = sorted(set(section) - set(NEXUS_DEFAULTS))
  if unknown:
    raise ValueError(
      f"Unknown optimizer.nexus field(s) {unknown}; known: {sorted(NEXUS_DEFAULTS)}."
    )
  for key, value in section.items():
    domains.check_value("optimizer.nexus", key, value, NEXUS_DOMAINS[key])


def _nexus_normalize(value):
  return None if value in (None, "none") else value


def _decay_mask(kind: str):
  """The optax mask of a weight_decay_mask kind (None: every leaf decays)."""
  if kind == "all":
    return None
  return lambda params: jax.tree.map(lambda p: leaf_decays(kind, p), params)


def make_optimizer(
  opt_config: Mapping[str, Any], num_steps: int, num_sources: int | None = None
) -> optax.GradientTransformation:
  """The optax chain a config section describes (see the module docstring);
  with ``nexus.enabled``, that chain wrapped in Nexus over ``num_sources``."""
  check_optimizer_config(opt_config)
  outer = _make_outer(opt_config, num_steps)
  if not nexus_enabled(opt_config):
    return outer
  if not num_sources:
    raise ValueError(
      "optimizer.nexus.enabled needs num_sources (the number of data "
      "sources grad_fn accepts): make_optimizer(..., num_sources=K)."
    )
  cfg = {**NEXUS_DEFAULTS, **dict(opt_config["nexus"])}
  return nexus(
    outer,
    inner_learning_rate=cfg["inner_learning_rate"],
    inner_steps=cfg["inner_steps"],
    num_sources=num_sources,
    normalize=_nexus_normalize(cfg["normalize"]),
    source_order=cfg["source_order"],
    seed=cfg["seed"],
    control=cfg["control"],
  )


def _make_outer(opt_config: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
  cfg = dict(opt_config)
  sched = dict(
    schedule=cfg.get("schedule", "constant"),
    num_steps=num_steps,
    warmup_steps=cfg.get("warmup_steps", 0),
    decay_fraction=cfg.get("decay_fraction", 0.2),
    final_lr_fraction=cfg.get("final_lr_fraction", 0.0),
  )
  entry, kwargs = OPTIMIZERS[cfg["name"]], hyperparameters(cfg)
  for key in entry.scheduled:  # Other peaks (Muon's AdamW side) follow the same shape.
    if kwargs.get(key) is not None:
      kwargs[key] = make_schedule(kwargs[key], **sched)
  tx = entry.constructor(
    make_schedule(cfg["learning_rate"], **sched),
    weight_decay=cfg.get("weight_decay", 0.0),
    mask=_decay_mask(cfg.get("weight_decay_mask", "all")),
    **kwargs,
  )
  clip = cfg.get("grad_clip_norm", 0.0) or 0.0
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip > 0 else tx


def evaluation_params(opt_config: Mapping[str, Any], params, opt_state):
  """The params to evaluate and report: ``params`` themselves, or what the
  optimizer names (schedule-free SF-NorMuon: its average iterate x)."""
  fn = get_optimizer(dict(opt_config)["name"]).evaluation_params
  return params if fn is None else fn(params, opt_state)


def evaluated_at(opt_config: Mapping[str, Any]) -> str:
  """Which iterate the summaries' numbers are of, in words."""
  fn = get_optimizer(dict(opt_config)["name"]).evaluation_params
  return "params" if fn is None else f"{fn.__module__}.{fn.__name__}(params, opt_state)"
