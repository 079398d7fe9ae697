"""analysis.connectivity's result: the connectivity.json entries (a run, a
pair, the per-optimizer-pair summary) and the files (connectivity.json and the
PNGs: loss along the paths per optimizer pair, the barrier matrix grouped by
optimizer, the constraint values and the spectra along the paths)."""

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis import barriers, plots
from analysis.alignment import leaf_arrays
from analysis.run_reader import Model, Run


def run_entry(run: Run) -> dict:
  return {
    "name": run.name,
    "workdir": run.workdir,
    "optimizer": run.config.optimizer.name,
    "learning_rate": run.config.optimizer.learning_rate,
    "weight_decay": run.config.optimizer.weight_decay,
    "seeds": run.seeds,
    "num_steps": run.config.num_steps,
    "final": run.summary.get("final", {}),
  }


def pair_group(opt_a: str, opt_b: str) -> str:
  """ "adamw-muon": the two optimizers' names, sorted."""
  return "-".join(sorted((opt_a, opt_b)))


def pair_entry(
  p: int, a: Model, b: Model, along, cons, spec_stats, ts, fit_loss, projected, path, align
) -> dict:
  """Pair p (models a and b) of the vmapped evaluation: losses, barriers,
  constraint values and spectra along its path, as connectivity.json holds it."""
  entry = {
    "a": {"index": a.index, "run": a.run, "seed": a.seed, "optimizer": a.optimizer},
    "b": {"index": b.index, "run": b.run, "seed": b.seed, "optimizer": b.optimizer},
    "kind": "intra-run" if a.run == b.run else "inter-run",
    "same_optimizer": a.ball == b.ball,
    "group": pair_group(a.ball, b.ball),
    "path": path,
    "aligned": bool(align),
  }
  for split in ("train", "test"):
    entry[f"{split}_loss"] = along[split]["loss"][p].tolist()
    if "accuracy" in along[split]:
      entry[f"{split}_accuracy"] = along[split]["accuracy"][p].tolist()
    found = barriers.loss_barriers(along[split]["loss"][p], ts)
    entry[f"{split}_barrier"] = {
      k: {"height": float(v.height), "t": float(v.t_max)} for k, v in found.items()
    }
  entry["constraints"] = {}
  for ball in dict.fromkeys((a.ball, b.ball)):
    per_leaf = {name: v[p] for name, v in leaf_arrays(cons[ball]).items()}  # (T,) each.
    max_T = np.max(np.stack(list(per_leaf.values())), axis=0)
    entry["constraints"][ball] = {
      "at_a": {n: float(v[0]) for n, v in per_leaf.items()},
      "at_b": {n: float(v[-1]) for n, v in per_leaf.items()},
      "max_along": {n: float(v.max()) for n, v in per_leaf.items()},
      "max_leaf_along": max_T.tolist(),
    }
  if spec_stats is not None:
    entry["spectra"] = {
      leaf: {s: v[p].tolist() for s, v in stats.items()} for leaf, stats in spec_stats.items()
    }
  if fit_loss is not None:
    entry["fit"] = {"final_curve_loss": float(fit_loss[p]), "projected": bool(projected[p])}
  return entry


def group_summary(pair_entries: Sequence[dict]) -> dict:
  """Per optimizer pair: the number of pairs and mean/std/min/max of each barrier."""
  out = {}
  for group in sorted({e["group"] for e in pair_entries}):
    rows = [e for e in pair_entries if e["group"] == group]
    out[group] = {"num_pairs": len(rows)}
    for split in ("train", "test"):
      for kind in barriers.BARRIER_KINDS:
        h = np.array([e[f"{split}_barrier"][kind]["height"] for e in rows])
        out[group][f"{split}_{kind}"] = {
          "mean": float(h.mean()),
          "std": float(h.std()),
          "min": float(h.min()),
          "max": float(h.max()),
        }
  return out


# ---------------------------------------------------------------------------
# Files.


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_outputs(
  result: dict, out_dir, plot: bool = True, barrier_kind: str = "linear"
) -> list[Path]:
  """OUT/connectivity.json and (with ``plot``) the PNGs; returns the paths."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  json_path = out / "connectivity.json"
  json_path.write_text(json.dumps(result, indent=1) + "\n")
  written = [json_path]
  if plot:
    written += write_plots(result, out, barrier_kind)
  return written


def write_plots(result: dict, out: Path, barrier_kind: str = "linear") -> list[Path]:
  ts, pairs = np.asarray(result["ts"]), result["pairs"]
  tag = f"{result['path']}{', aligned' if result['aligned'] else ''}"
  written = []
  for group in sorted({e["group"] for e in pairs}):
    rows = [e for e in pairs if e["group"] == group]
    labels = [f"{e['a']['run']}:{e['a']['seed']}–{e['b']['run']}:{e['b']['seed']}" for e in rows]
    written.append(
      plots.plot_path_losses(
        ts,
        [e["train_loss"] for e in rows],
        out / f"loss_{_safe(group)}.png",
        labels=labels,
        test_losses_PxT=[e["test_loss"] for e in rows],
        title=f"{group}: loss along the path ({tag})",
        log_scale=True,
      )
    )
    spec = {
      leaf: {s: np.asarray([e["spectra"][leaf][s] for e in rows]) for s in stats}
      for leaf, stats in rows[0].get("spectra", {}).items()
    }
    if spec:
      written.append(
        plots.plot_spectra_along_path(
          ts, spec, out / f"spectra_{_safe(group)}.png", title=f"{group}: spectra ({tag})"
        )
      )
    cons = {
      f"{ball} ball (max over leaves)": np.asarray(
        [e["constraints"][ball]["max_leaf_along"] for e in rows]
      )
      for ball in rows[0]["constraints"]
    }
    written.append(
      plots.plot_constraints_along_path(
        ts,
        cons,
        out / f"constraints_{_safe(group)}.png",
        title=f"{group}: λ·K*(θ)/bound along the path ({tag})",
      )
    )
  models = result["models"]
  heights = [e["train_barrier"][barrier_kind]["height"] for e in pairs]
  index_pairs = [(e["a"]["index"], e["b"]["index"]) for e in pairs]
  non_self = [(h, ij) for h, ij in zip(heights, index_pairs) if ij[0] != ij[1]]
  if non_self:
    matrix = barriers.barrier_matrix(
      [h for h, _ in non_self], [ij for _, ij in non_self], len(models)
    )
    written.append(
      plots.plot_barrier_matrix(
        matrix,
        [m["ball"] for m in models],
        out / "barrier_matrix.png",
        title=f"Train-loss barrier ({barrier_kind}; {tag})",
      )
    )
  return written
