"""Writing analysis.connectivity's result: connectivity.json and the PNGs
(loss along the paths per optimizer pair, the barrier matrix grouped by
optimizer, the constraint values and the spectra along the paths)."""

import json
import re
from pathlib import Path

import numpy as np

from analysis import barriers, plots


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
