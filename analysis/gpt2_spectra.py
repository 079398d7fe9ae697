r"""Do linear paths between GPT-2 solutions keep the weight spectrum?

    python -m analysis.gpt2_spectra --config=configs/gpt2_spectra.py --workdir=DIR

1. Trains GPT-2 with each optimizer × seed of the config (`python train.py
   --config=configs/gpt2.py:...`, one workdir each under DIR/runs/GROUP/; a run
   with a summary.json is finished and skipped), for each protocol of
   config.protocols: "shared_start" (group shared/: every run's init from
   config.init_seed, its data order and dropout from its seed: the standard
   linear-mode-connectivity setup), "spawn" (group spawn/: one trunk run,
   spawn/trunk, trains config.spawn_steps steps from config.init_seed with
   config.spawn_optimizer; every run then starts from its parameters, `init_from`,
   with a fresh optimizer state and its own data order: spawning from a common
   early checkpoint, where linear paths are low-barrier when training is stable
   to its noise, Frankle et al. 2020), "aligned" (group independent/: inits from
   the seeds, and each pair's b weight-matched onto a by
   `analysis.gpt2_alignment` before interpolating) and "unaligned" (the same
   independent runs as they are: the permutation-symmetric baseline).
2. For every pair of runs, kind "same" (one optimizer, two seeds), "cross"
   (two optimizers, one seed each) or "self" (a run and itself, a control):
   on the linear path φ(t) = (1 − t)·a + t·b at `points` values of t,
   the mean validation loss over the sources, and the singular values, σ_max,
   stable rank and effective rank of every attention and MLP matrix
   (h_i/attn/c_attn, h_i/attn/c_proj, h_i/mlp/c_fc, h_i/mlp/c_proj).
3. Writes DIR/spectra.json (everything, and "verdicts": one `stats.verdict_record`
   per claim, optimizer and protocol, `analysis.gpt2_spectra_stats`), DIR/report.md
   (one sentence per verdict, then the tables) and plots
   DIR/PROTOCOL_loss_along_path.png, DIR/PROTOCOL_spectra_STAT.png.

Worst cases (no interval; the interval verdicts are gpt2_spectra_stats'), per
pair and statistic s(t) of a matrix:
- preservation (same pairs): max_t |s(t) − s_lin(t)| / s_lin(t), where
  s_lin(t) = (1 − t)·s(0) + t·s(1) is the endpoints' interpolation; also the
  largest drop below the smaller endpoint value, relative to it.
- smooth transition (cross pairs): the largest step against the overall
  direction sign(s(1) − s(0)), relative to max(|s(1) − s(0)|, 1e-3·|s(0)|)
  ("monotone" if ≤ config.monotone_tolerance), and the overshoot outside
  [min(s(0), s(1)), max(...)] relative to the same scale ("spike" if > 0.1).
"""

import itertools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from analysis import (
  experiment_cli,
  gpt2_alignment,
  gpt2_spectra_stats,
  run_reader,
  train_runs,
)
from analysis.gpt2_spectra_report import (
  LAYER_TYPES,
  deviation_metrics,
  render_report,
  summarize,
  verdicts,
  write_plots,
)
from analysis.paths import interpolate_points, map_along_path
from analysis.spectra import STAT_NAMES, singular_values, spectrum_stats
from configs.common import pack_arg
from training import config_checks, tasks
from training import workdir as wd
from training.errors import UserError


def run_names(config) -> list[tuple[str, int]]:
  seeds = tasks.plus_list(config.seeds)
  return [(o, int(s)) for o in tasks.plus_list(config.optimizers) for s in seeds]


PROTOCOLS = ("shared_start", "spawn", "aligned", "unaligned")
TRUNK = "trunk"  # The spawn protocol's common parent run, runs/spawn/trunk.


def _variant(config, optimizer: str, steps: int) -> str:
  """configs/gpt2.py's variant string of one run of this experiment."""
  variant = pack_arg(
    size=config.size, optimizer=optimizer, steps=steps, batch=config.batch, seq_len=config.seq_len
  )
  return variant + (",runlocal" if config.runlocal else "")


def train_command(
  config, optimizer: str, seed: int, run_dir: Path, protocol: str = "unaligned"
) -> list[str]:
  variant = _variant(config, optimizer, config.steps)
  # Shared start: every run's parameters from one init, its data order from seed.
  shared = [f"--config.init_seed={config.init_seed}"] if protocol == "shared_start" else []
  if protocol == "spawn":  # From the trunk's last parameters (its sibling folder).
    shared = [f"--config.init_from={run_dir.parent / TRUNK}"]
  return (
    train_runs.train_py_command(
      "configs/gpt2.py", variant, run_dir, [f"--config.seed={seed}", *shared]
    )
    + config.train_flags.split()
  )


def trunk_command(config, run_dir: Path) -> list[str]:
  """The spawn protocol's trunk: spawn_steps of spawn_optimizer from init_seed."""
  variant = _variant(config, config.spawn_optimizer, config.spawn_steps)
  return (
    train_runs.train_py_command(
      "configs/gpt2.py", variant, run_dir, [f"--config.seed={config.init_seed}"]
    )
    + config.train_flags.split()
  )


FIELDS = {
  "steps": config_checks.positive(),
  "batch": config_checks.positive(),
  "seq_len": config_checks.positive(),
  "parallel_runs": config_checks.positive(),
  "points": config_checks.Field(int, lambda v: v >= 2, ">= 2 (the ends of the path)"),
  "include_self": config_checks.Field(bool),
  "eval_batches": config_checks.positive(),
  "eval_batch_size": config_checks.positive(),
  "monotone_tolerance": config_checks.nonnegative(float),
  "init_seed": config_checks.nonnegative(),
  "spawn_steps": config_checks.positive(),
  "spawn_optimizer": config_checks.Field(str),
  "preserve_tolerance": config_checks.nonnegative(float),
  "spike_tolerance": config_checks.nonnegative(float),
  "barrier_tolerance": config_checks.nonnegative(float),
}


def protocols_of(config) -> list[str]:
  """config.protocols, checked: '+'-separated names of PROTOCOLS."""
  names = tasks.plus_list(config.protocols)
  if not names or any(n not in PROTOCOLS for n in names) or len(set(names)) != len(names):
    raise UserError(
      f"Config field protocols={config.protocols!r}: '+'-separated, each once, of {PROTOCOLS}."
    )
  return names


def run_group(protocol: str) -> str:
  """The runs' folder: aligned and unaligned paths share the independent-init runs."""
  groups = {"shared_start": "shared", "spawn": "spawn"}
  return groups.get(protocol, "independent")


def trunk_dir(workdir: Path) -> Path:
  return workdir / "runs" / run_group("spawn") / TRUNK


def run_commands(config, workdir: Path) -> dict[tuple[str, str, int], tuple[Path, list[str]]]:
  """{(run group, optimizer, seed): (run dir, train.py command)} of every run (the
  spawn protocol's trunk is not among them: `trunk_command`)."""
  out = {}
  for protocol in protocols_of(config):
    group = run_group(protocol)
    for o, s in run_names(config):
      d = workdir / "runs" / group / f"{o}_s{s}"
      out[(group, o, s)] = (d, train_command(config, o, s, d, protocol))
  return out


def check_config(config, workdir: Path) -> None:
  """The fields, the optimizer and seed lists and every run's train.py config,
  before anything is created (a UserError, one line)."""
  config_checks.check_values(wd.flatten(config), FIELDS)
  protocols_of(config)
  optimizers, seeds = tasks.plus_list(config.optimizers), tasks.plus_list(config.seeds)
  if len(optimizers) < 1 or len(set(optimizers)) != len(optimizers):
    raise UserError(f"Config field optimizers={config.optimizers!r}: name each optimizer once.")
  if not seeds or not all(s.isdigit() for s in seeds) or len(set(seeds)) != len(seeds):
    raise UserError(
      f"Config field seeds={config.seeds!r} must be distinct '+'-separated ints >= 0."
    )
  commands = list(run_commands(config, workdir).values())
  if "spawn" in protocols_of(config):
    d = trunk_dir(workdir)
    commands.append((d, trunk_command(config, d)))
  train_runs.check_commands(commands)


def train_all(config, workdir: Path) -> dict[str, dict[str, Path]]:
  """Trains every run that has no summary.json yet, config.parallel_runs at a
  time (each a `python train.py` process); returns {group: {name: run dir}}."""
  commands = run_commands(config, workdir)
  runs = {key: d for key, (d, _) in commands.items()}
  common = {"batch_size": config.batch, "data.seq_len": config.seq_len, "model.size": config.size}
  if "spawn" in protocols_of(config):  # The trunk first: the spawn runs start from it.
    d = trunk_dir(workdir)
    train_runs.train_runs(
      [(d, trunk_command(config, d))],
      1,
      {
        d: common
        | {
          "seed": config.init_seed,
          "num_steps": config.spawn_steps,
          "optimizer.name": config.spawn_optimizer,
        }
      },
    )
  starts = {
    "shared": {"init_seed": config.init_seed},
    "spawn": {"init_from": str(trunk_dir(workdir))},
  }
  expected = {
    d: common | {"seed": s, "num_steps": config.steps, "optimizer.name": o} | starts.get(g, {})
    for (g, o, s), d in runs.items()
  }
  train_runs.train_runs(
    list(commands.values()),
    config.parallel_runs,
    expected,
  )
  out = {}
  for (g, _, _), d in runs.items():
    out.setdefault(g, {})[d.name] = d
  return out


def pairs_of(names: list[str], include_self: bool) -> list[tuple[str, str, str]]:
  """(kind, a, b): same (one optimizer), cross (two), self (a run to itself)."""
  out = []
  for a, b in itertools.combinations(names, 2):
    (opt_a, seed_a), (opt_b, seed_b) = a.rsplit("_s", 1), b.rsplit("_s", 1)
    if opt_a == opt_b:
      out.append((f"same:{opt_a}", a, b))
    else:  # One seed: the same initialization and data order.
      shared = "cross_shared_init" if seed_a == seed_b else "cross"
      out.append((f"{shared}:{opt_a}-{opt_b}", a, b))
  if include_self:
    seen = set()
    for name in names:
      opt = name.rsplit("_s", 1)[0]
      if opt not in seen:
        seen.add(opt)
        out.append((f"self:{opt}", name, name))
  return out


def path_matrices(params) -> dict:
  """The attention and MLP kernels: {h_i: {attn: {c_attn, c_proj}, mlp: {...}}}."""
  return {
    k: {part: {m: {"kernel": v[part][m]["kernel"]} for m in v[part]} for part in ("attn", "mlp")}
    for k, v in params.items()
    if k.startswith("h_")
  }


@jax.jit
def _path_sigmas(a, b, ts):
  return map_along_path(singular_values, "linear", a, b, ts)


def path_spectra(a, b, ts) -> dict[str, dict[str, np.ndarray]]:
  """{matrix name: {"sigma" (T, r), "sigma_max", "stable_rank", "effective_rank" (T,)}}."""
  sigmas = _path_sigmas(path_matrices(a), path_matrices(b), np.asarray(ts, np.float32))
  return {
    name: {"sigma": np.asarray(s), **{k: np.asarray(v) for k, v in spectrum_stats(s).items()}}
    for name, s in sigmas.items()
  }


def layer_type(name: str) -> str:
  for kind, suffix in LAYER_TYPES.items():
    if f"/{suffix}/" in name + "/":
      return kind
  raise ValueError(f"{name} is no attention/MLP matrix.")


def validation_batches(run_dir: Path, config) -> dict[str, dict[str, np.ndarray]]:
  return run_reader.text_batches(run_dir, "validation", config.eval_batch_size, config.eval_batches)


def make_path_losses(model, ts):
  """(a, b, val) -> the mean validation loss (over sources) at each t: (T,)."""
  loss = tasks.stacked_loss(model)

  def loss_at(params, val):
    per_source = [loss(params, batches) for batches in val.values()]
    return jnp.mean(jnp.stack(per_source))

  fn = jax.jit(
    lambda a, b, val: jax.lax.map(lambda p: loss_at(p, val), interpolate_points("linear", a, b, ts))
  )
  return lambda a, b, val: np.asarray(fn(a, b, val))


def _plain(tree):
  """Nested plain dicts of numpy arrays (aligned and loaded trees then match)."""
  return {k: _plain(v) for k, v in tree.items()} if hasattr(tree, "items") else np.asarray(tree)


def analyze(config, protocol: str, runs: dict[str, Path]) -> dict:
  """One protocol's paths; "aligned" permutes each pair's b onto its a first."""
  ts = np.linspace(0.0, 1.0, config.points)
  params, model, val = {}, None, None
  for name, run_dir in runs.items():
    _, p = wd.load_params(run_dir)
    params[name] = _plain(wd.seed_params(p, 0))
    if model is None:
      model, _ = run_reader.model_for(run_dir)
      val = validation_batches(run_dir, config)
  finals = {n: wd.read_summary(d) for n, d in runs.items()}
  pairs_out = []
  path_losses = make_path_losses(model, ts)
  for kind, a, b in pairs_of(list(runs), config.include_self):
    t0 = time.time()
    end_b = params[b]
    if protocol == "aligned" and a != b:
      end_b = _plain(gpt2_alignment.align_gpt2(params[a], end_b, model.config.n_head)[0])
    losses = path_losses(params[a], end_b, val)
    spectra = path_spectra(params[a], end_b, ts)
    barrier = float(np.max(losses - ((1 - ts) * losses[0] + ts * losses[-1])))
    matrices = {}
    for name, s in spectra.items():
      matrices[name] = {
        "layer_type": layer_type(name),
        **{
          stat: {
            **deviation_metrics(s[stat], ts, config.monotone_tolerance),
            "values": s[stat].tolist(),
          }
          for stat in STAT_NAMES
        },
        "singular_values": np.round(s["sigma"], 6).tolist(),
      }
    pairs_out.append(
      {
        "kind": kind,
        "a": a,
        "b": b,
        "loss": losses.tolist(),
        "loss_barrier": barrier,
        "matrices": matrices,
      }
    )
    logging.info("%s %s-%s: barrier %.3f (%.1f s)", kind, a, b, barrier, time.time() - t0)
  return {
    "protocol": protocol,
    "ts": ts.tolist(),
    "runs": {
      n: {
        "workdir": str(d),
        "final_val_loss": finals[n]["final_val_loss"],
        "final_ood_loss": finals[n].get("final_ood_loss"),
        "tokens_per_sec": finals[n].get("tokens_per_sec"),
      }
      for n, d in runs.items()
    },
    "pairs": pairs_out,
    "summary": summarize(pairs_out, config.monotone_tolerance),
  }


# ---------------------------------------------------------------------------
# Plots and the report.


def run(config, workdir) -> dict:
  t = time.time()
  workdir = Path(workdir).resolve()
  check_config(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  runs = train_all(config, workdir)
  train_s = time.time() - t
  result = {"config": config.to_dict(), "protocols": {}, "verdicts": []}
  plots = []
  for protocol in protocols_of(config):
    out = analyze(config, protocol, runs[run_group(protocol)])
    out["verdicts"] = verdicts(out)
    result["protocols"][protocol] = out
    result["verdicts"] += gpt2_spectra_stats.interval_verdicts(out, config)
    plots += write_plots(out, workdir, prefix=f"{protocol}_")
  runtime = time.time() - t
  result["runtime_s"], result["train_s"] = runtime, train_s
  experiment_cli.write_results(
    workdir, "spectra.json", result, render_report(result, runtime, plots)
  )
  return result


if __name__ == "__main__":
  experiment_cli.config_command(
    "analysis.gpt2_spectra",
    "configs/gpt2_spectra.py[:VARIANT]",
    "Output directory (training runs go in WORKDIR/runs; report.md, spectra.json and PNGs beside).",
    run,
  )
