"""Config schemas and checks: everything that can be checked runs before the
workdir or config.json exists, and fails with one line naming field and fix."""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
from absl import logging

from data import corpus, synthetic, text_sources
from models import gpt2, relu2
from optimizers import factory
from training import tasks
from training import workdir as wd
from training.errors import ConfigError, one_line


class Field(NamedTuple):
  """One config field: its type (int rejects bool; float accepts int), a check
  of its value and what a valid value is (for the error message)."""

  kind: type
  check: Callable[[Any], bool] = lambda v: True
  hint: str = ""


def _positive(kind=int):
  return Field(kind, lambda v: v >= 1, ">= 1")


def _nonneg(kind=int):
  return Field(kind, lambda v: v >= 0, ">= 0")


def _one_of(options):
  options = tuple(options)
  return Field(str, lambda v: v in options, f"one of {options}")


def _weights_ok(text: str) -> bool:
  try:
    return all(float(w) > 0 for w in tasks.plus_list(text))
  except ValueError:
    return False


COMMON_FIELDS = {
  "seed": _nonneg(),
  "num_seeds": _positive(),
  "num_steps": _positive(),
  "batch_size": _nonneg(),
  "log_every": _positive(),
  "checkpoint_every": _positive(),
  "keep_checkpoints": _positive(),
  "optimizer.learning_rate": Field(float, lambda v: v > 0, "> 0"),
  "optimizer.weight_decay": _nonneg(float),
}
RELU2_FIELDS = {
  "seed_chunk_size": _nonneg(),
  "model.name": Field(str),
  "model.width": _positive(),
  "model.out_dim": _positive(),
  "model.use_bias": Field(bool),
  "model.parametrization": _one_of(relu2.PARAMETRIZATIONS),
  "model.bias_init_std": _nonneg(float),
  "data.task": _one_of(synthetic.TASKS),
  "data.loss": _one_of(synthetic.LOSSES),
  "data.input_dim": _positive(),
  "data.n_train": _positive(),
  "data.n_test": _nonneg(),
  "data.teacher_width": _positive(),
  "data.input_dist": _one_of(synthetic.INPUT_DISTS),
  "data.label_noise": _nonneg(float),
  "data.seed": _nonneg(),
}
GPT2_FIELDS = {
  "model.name": Field(str),
  "model.size": _one_of(sorted(gpt2.CONFIGS)),
  "model.dropout": Field(float, lambda v: 0 <= v < 1, "in [0, 1)"),
  "model.dtype": _one_of(("float32", "bfloat16")),
  "model.remat": Field(bool),
  "grad_accum_steps": _positive(),
  "eval_every": _positive(),
  "similarity_every": _nonneg(),
  "eval_batches": _positive(),
  "eval_batch_size": _positive(),
  "peak_flops": Field(float),
  "data.source": Field(str, lambda v: v.split(":")[0] in corpus.KINDS, corpus.USAGE),
  "data.data_dir": Field(str),
  "data.sources": Field(
    str,
    lambda v: (
      bool(tasks.plus_list(v)) and all(s in text_sources.SOURCES for s in tasks.plus_list(v))
    ),
    f"'+'-separated names of {text_sources.SOURCES}",
  ),
  "data.weights": Field(str, _weights_ok, "empty (uniform) or '+'-separated positive numbers"),
  "data.ood_sources": Field(
    str,
    lambda v: all(s in text_sources.OOD_SOURCES for s in tasks.plus_list(v)),
    f"empty or '+'-separated names of {text_sources.OOD_SOURCES}",
  ),
  "data.tokenizer": _one_of(("bytes", "bpe", "gpt2")),
  "data.bpe_vocab_size": Field(int, lambda v: v > 256, "> 256"),
  "data.seq_len": _positive(),
  "data.max_chars": _nonneg(),
}
SCHEMAS = {"relu2": RELU2_FIELDS, "gpt2": GPT2_FIELDS}
# Fields added after workdirs were written: absent in an old config.json means this.
ADDED_FIELDS = {"data.source": "builtin", "data.data_dir": ""}
# Logging/checkpoint cadence does not change the trajectory.
CADENCE_FIELDS = {"log_every", "checkpoint_every", "keep_checkpoints", "similarity_every"}


def _type_ok(value, kind: type) -> bool:
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def check_fields(flat: dict, schema: dict[str, Field], model: str) -> None:
  for key in flat:
    if key not in schema and not key.startswith("optimizer."):
      raise ConfigError(
        f"Unknown config field {key!r}; fields of a {model} config: "
        f"{sorted(k for k in schema if '.' not in k)} and the sections "
        "['data', 'model', 'optimizer']."
      )
  for key, field in schema.items():
    if key not in flat:
      raise ConfigError(f"Config field {key!r} is missing; add it to the config file.")
    value = flat[key]
    if not _type_ok(value, field.kind):
      raise ConfigError(f"Config field {key}={value!r} should be a {field.kind.__name__}.")
    if not field.check(value):
      raise ConfigError(f"Config field {key}={value!r} is impossible: it must be {field.hint}.")


def check_relu2(config) -> None:
  if config.data.loss == "logistic" and config.data.task not in synthetic.CLASSIFICATION_TASKS:
    raise ConfigError(
      f"data.loss='logistic' needs ±1 labels, but data.task="
      f"{config.data.task!r} is a regression; use data.loss='squared'."
    )
  if config.data.loss == "logistic" and config.model.out_dim != 1:
    raise ConfigError("data.loss='logistic' needs model.out_dim=1.")
  if factory.nexus_enabled(config.optimizer):
    raise ConfigError(
      "optimizer.nexus.enabled needs data sources (a gradient per source); "
      "the relu2 trainer has one task: use a GPT-2 config."
    )


def check_gpt2(config) -> None:
  """The GPT-2 checks that relate several fields, the devices included."""
  if config.num_seeds != 1:
    raise ConfigError(
      f"num_seeds={config.num_seeds}: a GPT-2 run trains one seed per "
      "workdir; set num_seeds=1 and run other seeds as separate workdirs "
      "(--config.seed=S)."
    )
  if config.batch_size < 1:
    raise ConfigError(f"batch_size={config.batch_size}: GPT-2 needs >= 1 sequences per step.")
  k = len(tasks.source_names(config))
  if factory.nexus_enabled(config.optimizer):
    per_source = config.batch_size // k
    if config.batch_size % k or per_source % config.grad_accum_steps:
      raise ConfigError(
        f"batch_size={config.batch_size} with optimizer.nexus: each of the {k} "
        f"data.sources gets batch_size / {k} sequences per step, split into "
        f"grad_accum_steps={config.grad_accum_steps} microbatches; pick a "
        f"multiple of {k * config.grad_accum_steps}."
      )
    if config.data.weights:
      raise ConfigError(
        f"data.weights={config.data.weights!r} with optimizer.nexus: Nexus "
        "reads one equal batch per source per step; leave data.weights empty."
      )
  if config.batch_size % config.grad_accum_steps:
    raise ConfigError(
      f"batch_size={config.batch_size} is not divisible by grad_accum_steps="
      f"{config.grad_accum_steps}: each microbatch has batch_size / "
      "grad_accum_steps sequences."
    )
  block = gpt2.CONFIGS[config.model.size].block_size
  if config.data.seq_len > block:
    raise ConfigError(
      f"data.seq_len={config.data.seq_len} exceeds the context of "
      f"model.size={config.model.size!r} ({block}); lower data.seq_len."
    )
  weights = tasks.plus_list(config.data.weights)
  if weights and len(weights) != k:
    raise ConfigError(
      f"data.weights={config.data.weights!r} has {len(weights)} entries for "
      f"the {k} data.sources {config.data.sources!r}."
    )
  check_devices(config)


def microbatch_size(config) -> int:
  """Sequences per microbatch (Nexus: of each source)."""
  per_step = config.batch_size
  if factory.nexus_enabled(config.optimizer):
    per_step //= len(tasks.source_names(config))
  return per_step // config.grad_accum_steps


def check_devices(config) -> None:
  n_dev = jax.device_count()
  for name, size in (
    ("batch_size / grad_accum_steps", microbatch_size(config)),
    ("eval_batch_size", config.eval_batch_size),
  ):
    if size % n_dev:
      raise ConfigError(
        f"{name} = {size} is not divisible by the {n_dev} devices the batch "
        "is sharded over; pick a multiple."
      )


def validate_config(config) -> None:
  """Raises ConfigError with a one-line message on the first problem found."""
  flat = wd.flatten(config)
  model = flat.get("model.name")
  if model not in SCHEMAS:
    raise ConfigError(f"model.name={model!r} is not a known model; known: {sorted(SCHEMAS)}.")
  check_fields(flat, {**COMMON_FIELDS, **SCHEMAS[model]}, model)
  try:
    factory.check_optimizer_config(config.optimizer)
  except ValueError as e:
    raise ConfigError(one_line(e)) from None
  tasks.check_buildable(config)  # The data files: before the checks that count sources.
  (check_relu2 if model == "relu2" else check_gpt2)(config)


def config_diffs(old: dict, new: dict) -> list[str]:
  """ "field: old -> new" for every field that changes the trajectory."""
  old_flat, new_flat = wd.flatten(old), wd.flatten(new)
  for key, default in ADDED_FIELDS.items():
    if key in new_flat:
      old_flat.setdefault(key, default)
  ignored = set(CADENCE_FIELDS)
  if not new_flat.get("optimizer.nexus.enabled", False):
    # Workdirs from before the optimizer.nexus section: disabled is the same run.
    ignored |= {k for k in new_flat if k.startswith("optimizer.nexus.") and k not in old_flat}
  return [
    f"{k}: {old_flat.get(k, '<absent>')!r} -> {new_flat.get(k, '<absent>')!r}"
    for k in sorted(set(old_flat) | set(new_flat))
    if k not in ignored and old_flat.get(k, "<absent>") != new_flat.get(k, "<absent>")
  ]


def check_resume_config(workdir: Path, config, override: bool) -> list[str]:
  """The differences between config and an existing config.json (none for a
  fresh workdir); a changed config is refused unless ``override``."""
  path = workdir / wd.CONFIG_FILE
  if not path.exists():
    if wd.checkpoint_steps(workdir) and not override:
      raise ConfigError(
        f"{workdir} has checkpoints but no {wd.CONFIG_FILE}, so this config "
        "cannot be checked against the run's; restore the file, or pass "
        "--override_config to resume under this config."
      )
    return []
  try:
    old = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise ConfigError(
      f"{path} is unreadable ({one_line(e)}); restore it or use a new --workdir."
    ) from None
  diffs = config_diffs(old, wd.config_json(config))
  if diffs and not override:
    raise ConfigError(
      f"{workdir} was started with a different config ({'; '.join(diffs)}); "
      "use a new --workdir, or pass --override_config to resume anyway."
    )
  if diffs:
    logging.warning("Resuming %s with a changed config: %s", workdir, "; ".join(diffs))
  return diffs


def write_config(workdir: Path, config, replaced: bool) -> None:
  """config.json, atomically; a replaced one is kept as config.replaced_TIME.json."""
  path = workdir / wd.CONFIG_FILE
  if replaced and path.exists():
    path.rename(workdir / f"config.replaced_{int(time.time())}.json")
  wd.write_json_atomic(path, wd.config_json(config))
