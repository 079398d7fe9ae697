"""The atlas's report.md and PNGs, from the atlas.json dict (`analysis.atlas`)."""

import math
from pathlib import Path

import numpy as np
import scipy.cluster.hierarchy as hierarchy

from analysis import stats
from analysis.plots import new_figure, palette, save_figure


def _fmt(x) -> str:
  return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def _heatmap(ax, matrix, labels, title, fmt=_fmt):
  m = np.asarray(matrix, dtype=np.float64)
  image = ax.imshow(m, cmap="viridis")
  ax.set_xticks(range(m.shape[1]))
  ax.set_yticks(range(m.shape[0]))
  ax.set_yticklabels(labels[0], fontsize=7)
  ax.set_xticklabels(labels[1], fontsize=7, rotation=90)
  ax.set_title(title, fontsize=9)
  if m.size <= 400:
    for (i, j), v in np.ndenumerate(m):
      ax.text(j, i, fmt(v), ha="center", va="center", fontsize=5, color="w")
  return image


def write_plots(result: dict, workdir) -> list[Path]:
  """barriers.png (heatmap + dendrogram), membership.png, spectra.png,
  lr_sweep.png, ball_vs_barrier.png in WORKDIR/plots."""
  out, names, written = Path(workdir) / "plots", result["entries"], []
  fig, (ax_tree, ax_map) = new_figure(1, 2, (12, 5.5))
  tree = np.asarray(result["region_tree"])
  order = list(range(len(names)))
  if tree.size:
    found = hierarchy.dendrogram(tree, labels=names, ax=ax_tree, leaf_rotation=90)
    order = [names.index(n) for n in found["ivl"]]
    ax_tree.axhline(result["connected_tolerance"], color="k", ls=":", lw=1)
  ax_tree.set_title("Regions (average linkage on the excess barrier)", fontsize=9)
  median = np.asarray(result["barrier"]["median"])[np.ix_(order, order)]
  labels = [names[i] for i in order]
  fig.colorbar(_heatmap(ax_map, median, (labels, labels), "Aligned barrier (train, median)"))
  written.append(save_figure(fig, out / "barriers.png"))

  if result["ball_entries"]:
    fig, ax = new_figure(1, 1, (1.2 + 0.5 * len(result["ball_entries"]), 1.2 + 0.4 * len(names)))
    m = np.asarray(result["membership"], dtype=np.float64)
    image = _heatmap(ax, m, (names, result["ball_entries"]), "λ_j·K*_j(θ_i)/bound (≤ 1: inside)")
    fig.colorbar(image)
    written.append(save_figure(fig, out / "membership.png"))

  sigmas = result["spectra"]["singular_values"]
  fig, axes = new_figure(1, len(sigmas), (5 * len(sigmas), 3.8), squeeze=False)
  colors = palette(len(names))
  S = result["config"]["seeds"]
  for ax, (leaf, values) in zip(axes[0], sorted(sigmas.items()), strict=True):
    v = np.asarray(values)
    for e, name in enumerate(names):
      ax.hist(v[e * S : (e + 1) * S].ravel(), bins=20, histtype="step", color=colors[e], label=name)
    ax.set_title(f"Singular values of {leaf}", fontsize=9)
    ax.set_xlabel("σ")
  axes[0][-1].legend(fontsize=6)
  written.append(save_figure(fig, out / "spectra.png"))

  fig, ax = new_figure(1, 1, (7, 4.5))
  for name in result["selection"]:
    sweep = result["selection"][name]["sweep"]
    lrs = [p["learning_rate"] for p in sweep]
    ax.plot(lrs, [p["median_validation_loss"] for p in sweep], "o-", label=name, color=None)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel("median validation loss (converged seeds)")
  ax.legend(fontsize=6, ncol=2)
  written.append(save_figure(fig, out / "lr_sweep.png"))

  fig, ax = new_figure(1, 1, (5.5, 4.5))
  for key, marker in (("members", "o"), ("contrast", "s")):
    xs, ys = _ball_barrier_points(result, key)
    ax.scatter(xs, ys, marker=marker, label=key)
  ax.set_xlabel("ball distance max(λ_j·K*_j(θ_i), λ_i·K*_i(θ_j))")
  ax.set_ylabel("cross barrier (median)")
  ax.set_xscale("log")
  ax.legend(fontsize=7)
  written.append(save_figure(fig, out / "ball_vs_barrier.png"))
  return written


def _ball_barrier_points(result: dict, key: str) -> tuple[list, list]:
  """The point estimates behind the hypothesis test: (ball distance, barrier) per entry pair."""
  names, balls = result["entries"], result["ball_entries"]
  m, b = np.asarray(result["membership"]), np.asarray(result["barrier"]["median"])
  xs, ys = [], []
  for a, c in result["hypothesis"][key]["entry_pairs"]:
    i, j = names.index(a), names.index(c)
    parts = [m[i, balls.index(c)]] if c in balls else []
    parts += [m[j, balls.index(a)]] if a in balls else []
    xs.append(max(parts) if parts else np.nan)
    ys.append(b[i, j])
  return xs, ys


def render(result: dict, plots: list[Path]) -> str:
  names, cfg = result["entries"], result["config"]
  lines = [
    "# The optimizer atlas",
    "",
    f"relu2 width {cfg['width']}, teacher width {cfg['task']['teacher_width']}, "
    f"{cfg['seeds']} seeds per entry (seed s starts from one initialization for every entry), "
    f"{cfg['num_steps']} full-batch steps, {cfg['schedule']} schedule, λ = {cfg['weight_decay']}. "
    f"Zero predictor's train loss {result['zero_predictor_loss']:.3g}; a seed counts as converged "
    f"below {result['convergence_threshold']:.3g}; a barrier is ≈ 0 below "
    f"{result['connected_tolerance']:.3g}. Barriers: linear (Entezari) on the train loss along "
    "the straight path after weight matching (the one declared condition). Intervals: 95%, "
    f"{cfg['n_resamples']} seed resamples.",
    "",
    "## Verdicts",
    "",
  ]
  lines += [f"- {stats.describe(r)}" for r in result["hypothesis"].values()]
  lines += ["", "## Learning-rate sweeps (chosen on the validation half, never the train loss)", ""]
  lines += ["| entry | learning rate | converged seeds | median validation loss | chosen |"]
  lines += ["|---|---|---|---|---|"]
  for entry, item in result["selection"].items():
    for p in item["sweep"]:
      chosen = "**yes**" if item["chosen"] == p["k"] else ""
      lines.append(
        f"| {entry} | {p['learning_rate']:.3g} | {sum(p['converged'])}/{len(p['converged'])} | "
        f"{_fmt(p['median_validation_loss'])} | {chosen} |"
      )
  if result["dropped_entries"]:
    lines += [
      "",
      f"No converged seed at any learning rate: {', '.join(result['dropped_entries'])}.",
    ]
  lines += ["", "## Chosen runs", "", "| entry | bias | train | validation | test | region |"]
  lines += ["|---|---|---|---|---|---|"]
  for i, e in enumerate(names):
    f = result["final"][e]
    lines.append(
      f"| {e} | {result['implicit_bias'][e]} | {_fmt(f['train'])} | {_fmt(f['validation'])} | "
      f"{_fmt(f['test'])} | {result['regions'][i]} (spectra {result['spectra']['regions'][i]}) |"
    )
  b = result["barrier"]
  lines += ["", "## Aligned barriers: median [95% interval] (n pairs)", ""]
  lines += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for i, e in enumerate(names):
    cells = [
      f"{_fmt(b['median'][i][j])} [{_fmt(b['ci_low'][i][j])}, {_fmt(b['ci_high'][i][j])}] "
      f"({b['n_pairs'][i][j]})"
      for j in range(len(names))
    ]
    lines.append(f"| {e} | " + " | ".join(cells) + " |")
  if result["ball_entries"]:
    lines += ["", "## Ball membership: λ_j·K*_j(θ_i)/bound (rows: solutions, cols: balls)", ""]
    lines += ["| | " + " | ".join(result["ball_entries"]) + " |"]
    lines += ["|---" * (len(result["ball_entries"]) + 1) + "|"]
    for i, e in enumerate(names):
      lines.append(f"| {e} | " + " | ".join(_fmt(v) for v in result["membership"][i]) + " |")
  regions = {}
  for e, r in zip(names, result["regions"], strict=True):
    regions.setdefault(r, []).append(e)
  lines += ["", "## What the map shows", "", _summary(result, regions), ""]
  t = result["timings_s"]
  lines += [
    f"Barrier evaluation: {t['path_points']} path points in {t['barriers']:.1f} s "
    f"({t['seconds_per_1000_points']:.3f} s per 1,000 points, alignment included).",
    "",
    "Plots: " + ", ".join(f"`{p.name}`" for p in plots),
  ]
  return "\n".join(lines) + "\n"


def _summary(result: dict, regions: dict) -> str:
  groups = [g for g in regions.values() if len(g) > 1]
  alone = [g[0] for g in regions.values() if len(g) == 1]
  text = (
    f"The {len(result['entries'])} entries fall into {len(regions)} region(s) by excess aligned "
    f"barrier: " + "; ".join("{" + ", ".join(g) + "}" for g in groups)
  )
  text += (" and alone: " + ", ".join(alone) + ".") if alone else "."
  h = result["hypothesis"]["members"]
  text += (
    f" Across the members with a ball, the ball distance and the cross barrier have Spearman "
    f"ρ = {_fmt(h['statistic'])} [{_fmt(h['ci_low'])}, {_fmt(h['ci_high'])}]: the hypothesis "
    f"{h['verdict']}."
  )
  return text
