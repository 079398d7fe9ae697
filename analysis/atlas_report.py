"""The atlas's report.md and PNGs, from the atlas.json dict (`analysis.atlas`)."""

import math
from pathlib import Path

import numpy as np
import scipy.cluster.hierarchy as hierarchy

from analysis import atlas_runs, stats
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
  title = f"Aligned barrier ({result.get('barrier_loss', 'train')} loss, median)"
  fig.colorbar(_heatmap(ax_map, median, (labels, labels), title))
  written.append(save_figure(fig, out / "barriers.png"))

  if result["ball_entries"]:
    fig, ax = new_figure(1, 1, (1.2 + 0.5 * len(result["ball_entries"]), 1.2 + 0.4 * len(names)))
    m = np.asarray(result["membership"], dtype=np.float64)
    image = _heatmap(ax, m, (names, result["ball_entries"]), "λ_j·K*_j(θ_i)/bound (≤ 1: inside)")
    fig.colorbar(image)
    written.append(save_figure(fig, out / "membership.png"))

  sigmas = result["spectra"]["singular_values"]
  # At most 4 panels a row: GPT-2 has a dozen matrices.
  cols = min(4, len(sigmas))
  rows = -(-len(sigmas) // cols)
  fig, axes = new_figure(rows, cols, (5 * cols, 3.8 * rows), squeeze=False)
  colors = palette(len(names))
  S = result["config"]["seeds"]
  for ax in axes.ravel()[len(sigmas) :]:
    ax.set_visible(False)
  for ax, (leaf, values) in zip(axes.ravel(), sorted(sigmas.items())):
    v = np.asarray(values)
    for e, name in enumerate(names):
      ax.hist(v[e * S : (e + 1) * S].ravel(), bins=20, histtype="step", color=colors[e], label=name)
    ax.set_title(f"Singular values of {leaf}", fontsize=9)
    ax.set_xlabel("σ")
  axes.ravel()[len(sigmas) - 1].legend(fontsize=6)
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


def _relu2_header(result: dict) -> list[str]:
  cfg = result["config"]
  return [
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
  ]


def _gpt2_header(result: dict) -> list[str]:
  cfg = result["config"]
  return [
    "# The optimizer atlas on GPT-2",
    "",
    f"GPT-2 {cfg['size']} on the built-in {result.get('sources', '')} mixture, "
    f"{cfg['num_steps']} steps of {cfg['batch']} × {cfg['seq_len']} tokens, each optimizer's "
    "configs/gpt2.py learning rate × "
    f"{', '.join(f'{m:.3g}' for m in cfg['lr_multipliers'])} at seed 0, chosen on the "
    f"validation loss, then seeds 1..{cfg['seeds'] - 1} at the chosen rate (seed s: one init and "
    "data order for every entry). A run counts below a validation loss of "
    f"{result['convergence_threshold']:.3g} ({cfg['converged_fraction']} × ln V); a barrier is "
    f"≈ 0 below {result['connected_tolerance']:.3g} nats. Barriers: linear (Entezari) on the mean "
    "validation loss over sources along the straight path after weight matching, "
    f"{cfg['points']} points, cross pairs {cfg['cross_pairs']}. Function distance: "
    f"{result['function_distance_kind']}. Intervals: 95%, {cfg['n_resamples']} seed resamples.",
    "",
  ]


def _gpt2_sections(result: dict) -> list[str]:
  """The sources' gradient cosines and the function distances (GPT-2 only)."""
  names, lines = result["entries"], []
  if result.get("grad_cosine"):
    sources = str(result.get("sources", "")).split("+")
    lines += [
      "",
      f"## Sources' gradient cosines at the end ({', '.join(sources)}; median over seeds)",
    ]
    lines += ["", "| entry | mean pairwise | matrix (rows) |", "|---|---|---|"]
    for e, g in result["grad_cosine"].items():
      rows = "; ".join(" ".join(f"{v:+.2f}" for v in row) for row in g["matrix"])
      lines.append(f"| {e} | {_fmt(g['mean_pairwise'])} | {rows} |")
  fd = result["function_distance"]["median"]
  lines += ["", f"## Function distance ({result['function_distance_kind']}, median)", ""]
  lines += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for i, e in enumerate(names):
    lines.append(f"| {e} | " + " | ".join(_fmt(v) for v in fd[i]) + " |")
  return lines


def _sweep_and_runs(result: dict) -> list[str]:
  names = result["entries"]
  lines = [
    "",
    "## Learning-rate sweeps (chosen on held-out validation loss, never the train loss)",
    "",
  ]
  cfg, extended = result["config"], result.get("grid_extensions", {})
  grown = [
    f"{e} ({' and '.join(t for t in (f'{b} below' if b else '', f'{a} above' if a else '') if t)})"
    for e, (b, a) in extended.items()
    if b or a
  ]
  lines += [
    f"Each entry's grid: its base rate × {', '.join(f'{m:.3g}' for m in cfg['lr_multipliers'])}; "
    f"while the choice was the lowest or highest rate, up to {cfg.get('grid_extensions', 0)} "
    "more per side beyond it, one outermost grid ratio each (marked +). Extended: "
    + (", ".join(grown) if grown else "none")
    + ".",
    "",
  ]
  n = len(cfg["lr_multipliers"])
  lines += ["| entry | learning rate | converged seeds | median validation loss | chosen |"]
  lines += ["|---|---|---|---|---|"]
  for entry, item in result["selection"].items():
    for p in item["sweep"]:
      chosen = "**yes**" if item["chosen"] == p["k"] else ""
      ext = " +" if not 0 <= p["k"] < n else ""
      lines.append(
        f"| {entry} | {p['learning_rate']:.3g}{ext} | {sum(p['converged'])}/{len(p['converged'])} | "
        f"{_fmt(p['median_validation_loss'])} | {chosen} |"
      )
  if result["dropped_entries"]:
    lines += [
      "",
      f"No converged seed at any learning rate: {', '.join(result['dropped_entries'])}.",
    ]
  edge = atlas_runs.edge_entries(result["selection"])
  if edge:
    lines += [
      "",
      "Chosen at the edge of the grid after its extensions (the best rate may lie beyond it; "
      "these entries may be under-tuned: widen lr_multipliers or raise grid_extensions): "
      f"{', '.join(f'{e} ({side})' for e, side in edge)}.",
    ]
  columns = list(result["final"][names[0]])  # train, validation, test (GPT-2: ood)
  lines += ["", "## Chosen runs", "", f"| entry | bias | {' | '.join(columns)} | region |"]
  lines += ["|---" * (len(columns) + 3) + "|"]
  for i, e in enumerate(names):
    f = result["final"][e]
    lines.append(
      f"| {e} | {result['implicit_bias'][e]} | "
      + " | ".join(_fmt(f[c]) for c in columns)
      + f" | {result['regions'][i]} (spectra {result['spectra']['regions'][i]}) |"
    )
  return lines


def render(result: dict, plots: list[Path]) -> str:
  names = result["entries"]
  lines = _gpt2_header(result) if result.get("model") == "gpt2" else _relu2_header(result)
  lines += ["## Verdicts", ""]
  lines += [f"- {stats.describe(r)}" for r in result["hypothesis"].values()]
  lines += _sweep_and_runs(result)
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
  lines += _geometry_table(result)
  lines += _gpt2_sections(result) if result.get("model") == "gpt2" else []
  regions = {}
  for e, r in zip(names, result["regions"], strict=True):
    regions.setdefault(r, []).append(e)
  lines += ["", "## What the map shows", "", _summary(result, regions), ""]
  t = result["timings_s"]
  lines += [
    f"Barrier evaluation: {t['path_points']} path points in {t['barriers']:.1f} s "
    f"({t['seconds_per_1000_points']:.3f} s per 1,000 points, alignment included)"
    + (
      f": {t['flops_per_point'] / 1e9:.3g} GFLOP per point, "
      f"{100 * t['fraction_of_matmul_rate']:.1f}% of the f32 matmul rate measured in this run "
      f"({t['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s)."
      if "fraction_of_matmul_rate" in t
      else "."
    ),
    "",
    "Plots: " + ", ".join(f"`{p.name}`" for p in plots),
  ]
  return "\n".join(lines) + "\n"


def _geometry_table(result: dict) -> list[str]:
  """γ and Φ per entry and kept checkpoint: median over seeds [95% interval]."""
  geometry = result.get("update_geometry") or {}
  if not geometry:
    return []
  c = result["config"]
  minibatch = result.get("geometry_minibatch") or f"minibatches of {c['geometry_batch']} rows"
  lines = [
    "",
    f"## Update geometry at the kept checkpoints ({minibatch})",
    "",
    "γ = ⟨G, D⟩/⟨G̃, D⟩ (1: the minibatch update descends the full batch as much as the",
    "minibatch), Φ = ⟨G̃, D⟩²/⟨D, HD⟩ (the quadratic model's best decrease along D, ×2);",
    "median over converged seeds [95% interval]; Φ undefined where ⟨D, HD⟩ ≤ 0 (counted).",
    "",
    "| entry | step | γ | Φ | Φ undefined |",
    "|---|---|---|---|---|",
  ]
  cell = lambda r: f"{_fmt(r['statistic'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
  for entry, steps in geometry.items():
    if "not_measured" in steps:
      lines.append(f"| {entry} | — | not measured: {steps['not_measured']} | | |")
      continue
    for step, g in steps.items():
      lines.append(
        f"| {entry} | {step} | {cell(g['gamma'])} | {cell(g['phi'])} | "
        f"{g['undefined_phi']}/{g['minibatches']} |"
      )
  return lines


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
  g = result["hypothesis"].get("members_given_level")
  if g is not None:
    text += (
      f" Given the endpoints' training level (a barrier can track how far its endpoints "
      f"trained), the partial ρ is {_fmt(g['statistic'])} [{_fmt(g['ci_low'])}, "
      f"{_fmt(g['ci_high'])}]: {g['verdict']}."
    )
  return text
