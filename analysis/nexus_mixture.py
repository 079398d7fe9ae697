r"""The Nexus mixture experiment: same pretraining loss, closer source minima?

    python -m analysis.nexus_mixture --config=configs/nexus_mixture.py --workdir=DIR

1. Trains GPT-2 with every arm × seed of the config (`python train.py
   --config=configs/gpt2.py:...`, one workdir each under DIR/runs/; a run with
   a summary.json is finished and skipped). Arms (analysis.nexus_runs): an
   optimizer (adamw, muon, ...), nexus_OPT (Nexus around it,
   optimizers/nexus.py), nexuscontrol_OPT (the control: Nexus's
   pseudo-gradient norm, no alignment pressure) and the γ × k grid's
   nexus_OPT_gγ_kk; all read the same tokens per step (Nexus: batch/K
   sequences of each of the K sources), so all have the same token budget.
2. Per run, from its summary and metrics: the final validation loss per source
   and its mean, the OOD loss per held-out set, the K×K gradient-cosine matrix
   on the validation batches (at the end and every similarity_every steps).
   From its final checkpoint: the closeness of the sources' minima
   (analysis.source_geometry.source_minima: Adam on each source alone, vmapped
   over sources; distances, pairwise barrier, loss drop, first-order proxy)
   and the exact-match accuracy on held-out arithmetic families by greedy
   decoding (analysis.exact_match).
3. Paired by seed (analysis.nexus_claims): Nexus vs its base, Nexus vs the
   control, the control vs the base and every grid point vs its base, each
   claim with a seed-resampled 95% interval and a verdict (analysis.stats).
   Writes DIR/nexus.json (every number and the verdict records),
   DIR/report.md (analysis.nexus_report) and plots DIR/*.png.
"""

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from analysis import (
  exact_match,
  experiment_cli,
  nexus_claims,
  nexus_plots,
  nexus_report,
  nexus_runs,
  run_reader,
  source_geometry,
  train_runs,
)
from optimizers.nexus import CONTROLS
from training import config_checks, tasks
from training import workdir as wd
from training.errors import UserError

FIELDS = {
  "steps": config_checks.positive(),
  "batch": config_checks.positive(),
  "seq_len": config_checks.positive(),
  "inner_learning_rate": config_checks.Field(
    float, lambda v: math.isfinite(v) and v > 0, "finite and > 0"
  ),
  "inner_steps": config_checks.positive(),
  "control": config_checks.Field(str, lambda v: v in CONTROLS[1:], f"one of {CONTROLS[1:]}"),
  "similarity_every": config_checks.positive(),
  "parallel_runs": config_checks.positive(),
  "minima.steps": config_checks.positive(),
  "minima.learning_rate": config_checks.Field(
    float, lambda v: math.isfinite(v) and v > 0, "finite and > 0"
  ),
  "minima.batch_size": config_checks.positive(),
  "minima.num_batches": config_checks.positive(),
  "minima.points": config_checks.Field(int, lambda v: v >= 2, ">= 2 (the ends of the segment)"),
  "minima.proxy_step": config_checks.Field(
    float, lambda v: math.isfinite(v) and v > 0, "finite and > 0"
  ),
  "equal_loss_tolerance": config_checks.nonnegative(float),
  "exact_match.num_per_family": config_checks.nonnegative(int),
  "exact_match.max_new_worked": config_checks.positive(),
  "exact_match.max_new_question": config_checks.positive(),
  "exact_match.batch_size": config_checks.positive(),
  "n_resamples": config_checks.positive(),
}


def check_config(config, workdir: Path) -> None:
  """The fields, the arms and seeds and every run's train.py config, before
  anything is created (a UserError, one line)."""
  config_checks.check_values(wd.flatten(config), FIELDS)
  for prompt in tasks.plus_list(config.exact_match.prompts):
    if prompt not in exact_match.PROMPTS:
      raise UserError(
        f"config.exact_match.prompts names {prompt!r}; known: {'+'.join(exact_match.PROMPTS)}."
      )
    if config.exact_match[f"max_new_{prompt}"] >= config.seq_len:
      raise UserError(
        f"config.exact_match.max_new_{prompt}={config.exact_match[f'max_new_{prompt}']} "
        f"leaves no room for the prompt in seq_len={config.seq_len}; lower it."
      )
  commands = nexus_runs.run_commands(config, workdir)
  train_runs.check_commands([(d, cmd) for _, d, cmd in commands.values()])


def train_all(config, workdir: Path) -> tuple[dict[tuple[str, int], Path], dict]:
  """({(arm, seed): run dir}, {run name: "skipped" | seconds})."""
  commands = nexus_runs.run_commands(config, workdir)
  runs = {key: d for key, (_, d, _) in commands.items()}
  times = train_runs.train_runs(
    [(d, cmd) for _, d, cmd in commands.values()],
    config.parallel_runs,
    expected={
      d: nexus_runs.expected_fields(config, arm, s) for (_, s), (arm, d, _) in commands.items()
    },
  )
  return runs, times


def minima_batches(run_dir: Path, config) -> dict[str, np.ndarray]:
  """The sources' fine-tuning batches stacked on a leading source axis:
  {"inputs", "targets": (K, N, E, T)} (the first N·E training windows of each)."""
  per_source = run_reader.text_batches(
    run_dir, "train", config.minima.batch_size, config.minima.num_batches
  )
  sources = list(per_source)
  n = min(b["inputs"].shape[0] for b in per_source.values())
  return {k: np.stack([per_source[s][k][:n] for s in sources]) for k in ("inputs", "targets")}


def measure_minima(loss_fn, optimizer, params, batches, config) -> dict:
  """source_minima of the run's final params, as plain lists. Pass the same
  loss_fn and optimizer objects for every run: the jitted code is cached on them."""
  m = config.minima
  out = source_geometry.source_minima(
    loss_fn, params, batches, optimizer, m.steps, proxy_step=m.proxy_step, points=m.points
  )
  k = out["pairwise_distance"].shape[0]
  upper = np.triu_indices(k, 1)
  summary = {
    "mean_pairwise_distance": float(out["pairwise_distance"][upper].mean()),
    "mean_pairwise_barrier": float(out["pairwise_barrier"][upper].mean()),
    "mean_distance_to_start": float(out["distance_to_start"].mean()),
    "mean_loss_drop": float(out["loss_drop"].mean()),
  }
  # Scale-free: the minima's spread relative to how far fine-tuning went
  # (2·sin(angle/2) between the fine-tuning displacements for equal lengths).
  summary["relative_spread"] = summary["mean_pairwise_distance"] / max(
    summary["mean_distance_to_start"], 1e-12
  )
  return {**{name: np.asarray(v).tolist() for name, v in out.items()}, **summary}


def run_record(run_dir: Path, params, seconds) -> dict:
  """The run's numbers from its summary and metrics (all but the minima)."""
  summary = wd.read_summary(run_dir)
  if "final_grad_cosine" not in summary:
    raise UserError(
      f"{run_dir} has no final_grad_cosine: it was trained without "
      "similarity_every; delete it and rerun."
    )
  metrics = wd.read_metrics(run_dir)
  cos = np.asarray(summary["final_grad_cosine"])
  return {
    "workdir": str(run_dir),
    "val_loss": summary["final_val_loss"],
    "ood_loss": summary["final_ood_loss"],
    "grad_cosine": cos.tolist(),
    "grad_cosine_mean_pairwise": float(cos[np.triu_indices(cos.shape[0], 1)].mean()),
    "grad_cosine_curve": [
      (r["step"], r["grad_cosine/mean_pairwise"])
      for r in metrics
      if "grad_cosine/mean_pairwise" in r
    ],
    "val_loss_curve": [(r["step"], r["val_loss/mean"]) for r in metrics if "val_loss/mean" in r],
    "tokens_per_step": summary["tokens_per_step"],
    "num_steps": summary["num_steps"],
    "tokens_per_sec": summary.get("tokens_per_sec"),
    "train_seconds": seconds,
    "param_norm": float(optax.tree.norm(params)),
  }


def measure_exact_match(apply_fn, params, tokenizer, problems, config) -> dict:
  """{prompt: analysis.exact_match.exact_match(...)} for config.exact_match.prompts."""
  em = config.exact_match
  return {
    prompt: exact_match.exact_match(
      apply_fn,
      params,
      tokenizer,
      problems,
      config.seq_len,
      prompt,
      em[f"max_new_{prompt}"],
      em.batch_size,
    )
    for prompt in tasks.plus_list(em.prompts)
  }


def analyze(config, runs: dict[tuple[str, int], Path], times: dict) -> dict:
  """{"sources", "token_budget", "runs": {arm: {seed (a string, as in nexus.json): record}}}."""
  model, batches, out, sources = None, None, {}, None
  optimizer = optax.adam(config.minima.learning_rate)
  problems = exact_match.held_out_problems(config.exact_match.num_per_family)
  for (arm, seed), run_dir in runs.items():
    t = time.time()
    _, params = wd.load_params(run_dir)
    params = jax.tree.map(jnp.asarray, wd.seed_params(params, 0))
    record = run_record(run_dir, params, times.get(run_dir.name))
    if model is None:
      model, train_config = run_reader.model_for(run_dir)
      batches = minima_batches(run_dir, config)
      sources = tasks.plus_list(train_config["data"]["sources"])
      loss_fn = tasks.stacked_loss(model)
      tokenizer = tasks.gpt2_tokenizer(wd.load_config(run_dir), run_dir)

      def apply_fn(p, tokens_BxT, model=model):  # One object: the decoder compiles once.
        return model.apply({"params": p}, tokens_BxT)

    record["minima"] = m = measure_minima(loss_fn, optimizer, params, batches, config)
    if problems:
      record["exact_match"] = measure_exact_match(apply_fn, params, tokenizer, problems, config)
    out.setdefault(arm, {})[str(seed)] = record
    logging.info(
      "%s seed %d: val %.3f, OOD %.3f, gradient cosine %.3f, minima pairwise "
      "distance %.3f, barrier %.4f (%.1f s)",
      arm,
      seed,
      record["val_loss"]["mean"],
      record["ood_loss"]["mean"],
      record["grad_cosine_mean_pairwise"],
      m["mean_pairwise_distance"],
      m["mean_pairwise_barrier"],
      time.time() - t,
    )
  budgets = {r["tokens_per_step"] * r["num_steps"] for arm in out.values() for r in arm.values()}
  if len(budgets) != 1:
    raise UserError(
      f"The runs read different token budgets {sorted(budgets)}; they must be "
      "equal for the comparison: delete DIR/runs and rerun."
    )
  return {"sources": sources, "token_budget": budgets.pop(), "runs": out}


def run(config, workdir) -> dict:
  t = time.time()
  workdir = Path(workdir).resolve()
  check_config(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  runs, times = train_all(config, workdir)
  result = {
    "config": config.to_dict(),
    "arms": nexus_runs.arm_table(config),
    **analyze(config, runs, times),
  }
  result["comparisons"] = nexus_claims.compare(result)
  result["verdicts"] = nexus_claims.verdict_records(result["comparisons"])
  plots = nexus_plots.write_plots(result, workdir)
  result["runtime_s"] = time.time() - t
  experiment_cli.write_results(workdir, "nexus.json", result, nexus_report.render(result, plots))
  return result


if __name__ == "__main__":
  experiment_cli.config_command(
    "analysis.nexus_mixture",
    "configs/nexus_mixture.py[:VARIANT]",
    "Output directory (training runs go in WORKDIR/runs; report.md, nexus.json and PNGs beside).",
    run,
  )
