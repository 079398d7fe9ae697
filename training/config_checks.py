"""Config schemas and checks: everything that can be checked runs before the
workdir or config.json exists, and fails with one line naming field and fix."""

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
from absl import logging

from data import corpus, synthetic, text_sources
from models import gpt2, relu2
from optimizers import factory, microbatch
from training import tasks
from training import workdir as wd
from training.errors import ConfigError, one_line


class Field(NamedTuple):
  """One config field: its type (int rejects bool; float accepts int), a check
  of its value and what a valid value is (for the error message)."""

  kind: type
  check: Callable[[Any], bool] = lambda v: True
  hint: str = ""


def positive(kind=int):
  return Field(kind, lambda v: v >= 1, ">= 1")


def nonnegative(kind=int):
  if kind is float:  # inf and NaN are not numbers a run can use.
    return Field(float, lambda v: math.isfinite(v) and v >= 0, "finite and >= 0")
  return Field(kind, lambda v: v >= 0, ">= 0")


def one_of(options):
  options = tuple(options)
  return Field(str, lambda v: v in options, f"one of {options}")


def _weights_ok(text: str) -> bool:
  try:
    return all(math.isfinite(float(w)) and float(w) > 0 for w in tasks.plus_list(text))
  except ValueError:
    return False


def _names_ok(text: str, known) -> bool:
  """'+'-separated names, each known, none twice (a source twice would double its weight)."""
  names = tasks.plus_list(text)
  return all(n in known for n in names) and len(set(names)) == len(names)


COMMON_FIELDS = {
  "seed": nonnegative(),
  "num_seeds": positive(),
  "num_steps": positive(),
  "batch_size": nonnegative(),
  "log_every": positive(),
  "checkpoint_every": positive(),
  "keep_checkpoints": positive(),
}  # optimizer.*: optimizers.factory checks them against their domains.
RELU2_FIELDS = {
  "seed_chunk_size": nonnegative(),
  "model.name": Field(str),
  "model.width": positive(),
  "model.out_dim": positive(),
  "model.use_bias": Field(bool),
  "model.parametrization": one_of(relu2.PARAMETRIZATIONS),
  "model.bias_init_std": nonnegative(float),
  "data.task": one_of(synthetic.TASKS),
  "data.loss": one_of(synthetic.LOSSES),
  "data.input_dim": positive(),
  "data.n_train": positive(),
  "data.n_test": nonnegative(),
  "data.teacher_width": positive(),
  "data.input_dist": one_of(synthetic.INPUT_DISTS),
  "data.label_noise": nonnegative(float),
  "data.seed": nonnegative(),
}
GPT2_FIELDS = {
  "init_seed": Field(int, lambda v: v >= -1, ">= -1 (-1: the init from seed)"),
  "init_from": Field(str),
  "init_from_step": Field(int, lambda v: v >= -1, ">= -1 (-1: the run's latest checkpoint)"),
  "model.name": Field(str),
  "model.size": one_of(sorted(gpt2.CONFIGS)),
  "model.dropout": Field(float, lambda v: 0 <= v < 1, "in [0, 1)"),
  "model.dtype": one_of(("float32", "bfloat16")),
  "model.remat": Field(bool),
  "grad_accum_steps": positive(),
  "mesh.data": Field(int, lambda v: v == -1 or v > 0, "> 0, or -1 for the rest of the devices"),
  "mesh.fsdp": Field(int, lambda v: v == -1 or v > 0, "> 0, or -1 for the rest of the devices"),
  "distributed.coordinator_address": Field(str),
  "distributed.num_processes": nonnegative(),
  "distributed.process_id": Field(int, lambda v: v >= -1, ">= -1 (-1: unset)"),
  "distributed.local_device_ids": Field(str),
  "distributed.cluster": one_of(("auto", "off")),
  "distributed.initialization_timeout": positive(),
  "distributed.heartbeat_timeout": positive(),
  "distributed.peer_timeout": positive(),
  "eval_every": positive(),
  "similarity_every": nonnegative(),
  "eval_batches": positive(),
  "eval_batch_size": positive(),
  "peak_flops": Field(
    float, math.isfinite, "finite: FLOP/s > 0, 0 for no MFU, < 0 to measure the matmul rate"
  ),
  "data.source": Field(str, lambda v: v.split(":")[0] in corpus.KINDS, corpus.USAGE),
  "data.data_dir": Field(str),
  "data.sources": Field(
    str,
    lambda v: bool(tasks.plus_list(v)) and _names_ok(v, text_sources.SOURCES),
    f"'+'-separated names of {text_sources.SOURCES}, each once",
  ),
  "data.weights": Field(str, _weights_ok, "empty (uniform) or '+'-separated positive numbers"),
  "data.ood_sources": Field(
    str,
    lambda v: _names_ok(v, text_sources.OOD_SOURCES),
    f"empty or '+'-separated names of {text_sources.OOD_SOURCES}, each once",
  ),
  "data.tokenizer": one_of(("bytes", "bpe", "gpt2")),
  "data.bpe_vocab_size": Field(int, lambda v: v > 257, "> 257 (256 bytes + <|endoftext|>)"),
  "data.seq_len": positive(),
  "data.max_chars": nonnegative(),
}
SCHEMAS = {"relu2": RELU2_FIELDS, "gpt2": GPT2_FIELDS}
# Fields added after workdirs were written: absent in an old config.json means this.
ADDED_FIELDS = {
  "data.source": "builtin",
  "data.data_dir": "",
  "init_seed": -1,
  "init_from": "",
  "init_from_step": -1,
  "optimizer.nexus.control": "none",  # Nexus workdirs from before the control arm
}
# Logging/checkpoint cadence does not change the trajectory.
CADENCE_FIELDS = {"log_every", "checkpoint_every", "keep_checkpoints", "similarity_every"}
# The device layout may change across a resume: a checkpoint saved on N devices restores onto
# the shardings of the current mesh of M devices (training.checkpoints), and the layout changes
# only the order of floating-point reductions, not the trajectory. So a workdir written before
# the mesh existed (no mesh.* in its config.json) resumes too, without --override_config.
LAYOUT_FIELDS = {"mesh.data", "mesh.fsdp"} | {
  # Which hosts run it is layout too: a run saved by 2 processes resumes in 1 (or 4).
  f"distributed.{k}"
  for k in (
    "coordinator_address",
    "num_processes",
    "process_id",
    "local_device_ids",
    "cluster",
    "initialization_timeout",
    "heartbeat_timeout",
    "peer_timeout",
  )
}


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
  check_values(flat, schema)


def check_values(flat: dict, schema: dict[str, Field]) -> None:
  """Every schema field present in ``flat`` ({"a.b": value}), of its type and
  inside its domain; a ConfigError naming the first that is not."""
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
  if config.get("init_from") and config.get("init_seed", -1) >= 0:
    raise ConfigError(
      f"init_from={config.init_from!r} and init_seed={config.init_seed} both name the "
      "starting parameters; keep one (init_seed=-1 to start from init_from's run)."
    )
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
    # Per-microbatch gradients (crossfit_adamw): GPT-2's accumulation gives them, relu2 none.
    microbatch.check_microbatches(
      config.optimizer, config.get("grad_accum_steps") if model == "gpt2" else None
    )
  except ValueError as e:
    raise ConfigError(one_line(e)) from None
  warmup = config.optimizer.get("warmup_steps", 0)
  if warmup > config.num_steps:
    raise ConfigError(
      f"optimizer.warmup_steps={warmup} is longer than num_steps={config.num_steps}: the "
      "learning rate would never reach its peak; lower warmup_steps or raise num_steps."
    )
  tasks.check_buildable(config)  # The data files: before the checks that count sources.
  (check_relu2 if model == "relu2" else check_gpt2)(config)


def config_diffs(old: dict, new: dict) -> list[str]:
  """ "field: old -> new" for every field that changes the trajectory."""
  old_flat, new_flat = wd.flatten(old), wd.flatten(new)
  for key, default in ADDED_FIELDS.items():
    if key in new_flat:
      old_flat.setdefault(key, default)
  ignored = CADENCE_FIELDS | LAYOUT_FIELDS
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
  if diffs and not wd.checkpoint_steps(workdir):
    # Nothing trained under the old config (it failed before its first
    # checkpoint): the corrected command starts afresh.
    logging.info("%s has no checkpoint; starting it under the new config.", workdir)
    return diffs
  if diffs and not override:
    raise ConfigError(
      f"{workdir} was started with a different config ({'; '.join(diffs)}); "
      "use a new --workdir, or pass --override_config to resume anyway."
    )
  return diffs


def write_config(workdir: Path, config, replaced: bool) -> None:
  """config.json, atomically; a replaced one is kept as config.replaced_TIME.json.

  The old file gets a second name first, then the new one is renamed over it:
  at every moment (a full disk, a kill) config.json is one of the two."""
  path = workdir / wd.CONFIG_FILE
  backup = workdir / f"config.replaced_{int(time.time())}.json"
  linked = replaced and path.exists()
  if linked:
    os.link(path, backup)
  try:
    wd.write_json_atomic(path, wd.config_json(config))
  except OSError:
    if linked:
      backup.unlink(missing_ok=True)
    raise
