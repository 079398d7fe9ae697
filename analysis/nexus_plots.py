"""The Nexus mixture experiment's PNGs: losses per arm (in-distribution and
OOD), the sources' gradient-cosine matrices, the training curves, the
sources' minima and the γ × k curve of OOD change against in-distribution
change (`analysis.nexus_report` has the numbers they show)."""

from pathlib import Path

import numpy as np

from analysis.nexus_report import arm_label, arm_stats
from analysis.plots import new_figure, palette, save_figure


def _dots(ax, names, stats, arms, colors, ylabel):
  """Per metric name, one column per arm: the mean ± std over seeds (marker and
  bar) and each seed (small dots). Markers, not bars: the y axis zooms to the
  differences instead of starting at 0."""
  width = 0.8 / len(arms)
  x = np.arange(len(names))
  for i, arm in enumerate(arms):
    xs = x + (i - (len(arms) - 1) / 2) * width
    means = [stats[arm][k]["mean"] for k in names]
    stds = [stats[arm][k]["std"] for k in names]
    ax.errorbar(xs, means, yerr=stds, fmt="o", capsize=3, color=colors[i], label=arm_label(arm))
    for j, k in enumerate(names):
      vals = stats[arm][k]["values"]
      ax.plot(np.full(len(vals), xs[j] + width / 4), vals, ".", color=colors[i], ms=3)
  ax.set_xticks(x, [k.split("/")[-1] for k in names], fontsize=8)
  ax.set_ylabel(ylabel)
  ax.grid(axis="y", alpha=0.3)


def write_plots(result: dict, out: Path) -> list[Path]:
  runs, arms = result["runs"], list(result["runs"])
  stats, colors, paths = arm_stats(runs), palette(len(arms)), []
  first = next(iter(next(iter(runs.values())).values()))
  val_names = [f"val_loss/{s}" for s in first["val_loss"] if s != "mean"] + ["val_loss"]
  ood_names = [f"ood_loss/{s}" for s in first["ood_loss"] if s != "mean"] + ["ood_loss"]

  fig, axes = new_figure(1, 2, (11, 3.6))
  _dots(axes[0], val_names, stats, arms, colors, "validation loss (nats/byte)")
  axes[0].set_title("in-distribution (last column: mean)")
  _dots(axes[1], ood_names, stats, arms, colors, "OOD loss (nats/byte)")
  axes[1].set_title("out of distribution (last column: mean)")
  axes[0].legend(fontsize=7)
  paths.append(save_figure(fig, out / "losses.png"))

  sources = result["sources"]
  fig, axes = new_figure(1, len(arms), (3.2 * len(arms), 3.2))
  for ax, arm in zip(np.atleast_1d(axes), arms):
    cos = np.mean([np.asarray(r["grad_cosine"]) for r in runs[arm].values()], axis=0)
    im = ax.imshow(cos, vmin=-1, vmax=1, cmap="RdBu_r")
    for (i, j), v in np.ndenumerate(cos):
      ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(sources)), sources, fontsize=8)
    ax.set_yticks(range(len(sources)), sources, fontsize=8)
    ax.set_title(f"{arm_label(arm)} (mean of {len(runs[arm])})", fontsize=9)
  fig.colorbar(im, ax=axes, shrink=0.8, label="gradient cosine")
  paths.append(save_figure(fig, out / "grad_cosine_matrices.png"))

  fig, axes = new_figure(1, 2, (11, 3.6))
  for ax, key, ylabel in (
    (axes[0], "grad_cosine_curve", "mean pairwise gradient cosine"),
    (axes[1], "val_loss_curve", "validation loss (mean of sources)"),
  ):
    for i, arm in enumerate(arms):
      curves = [np.asarray(r[key], np.float64) for r in runs[arm].values() if r[key]]
      if not curves:
        continue
      n = min(len(c) for c in curves)
      steps, vals = curves[0][:n, 0], np.stack([c[:n, 1] for c in curves])
      ax.plot(steps, vals.mean(0), ".-", color=colors[i], label=arm_label(arm))
      ax.fill_between(steps, vals.min(0), vals.max(0), color=colors[i], alpha=0.2)
    ax.set(xlabel="step", ylabel=ylabel)
  axes[0].axhline(0, color="gray", lw=0.5)
  axes[0].legend(fontsize=7)
  axes[0].set_title("sources' gradient alignment (band: seeds' range)", fontsize=9)
  paths.append(save_figure(fig, out / "training_curves.png"))

  panels = (
    ("minima_distance", "mean pairwise ‖θ_s − θ_s'‖"),
    ("minima_barrier", "mean pairwise barrier (nats)"),
    ("distance_to_start", "mean ‖θ_s − θ‖"),
    ("relative_spread", "pairwise / ‖θ_s − θ‖"),
  )
  fig, axes = new_figure(1, len(panels), (3.2 * len(panels), 3.2))
  for ax, (key, ylabel) in zip(axes, panels):
    _dots(ax, [key], stats, arms, colors, ylabel)
    ax.set_xticks([])
  axes[0].legend(fontsize=7)
  fig.suptitle("the sources' minima around the final point (fine-tuned on each source)", fontsize=9)
  paths.append(save_figure(fig, out / "minima.png"))
  if any(c["kind"] == "grid" for c in result.get("comparisons", {}).values()):
    paths.append(grid_plot(result, out / "grid_id_vs_ood.png"))
  return paths


def _bar(interval: dict):
  """An errorbar's [[below], [above]] from a bootstrap interval (None: no interval)."""
  v, lo, hi = interval["statistic"], interval["ci_low"], interval["ci_high"]
  return [[v - lo], [hi - v]] if np.isfinite(lo) and np.isfinite(hi) else None


def grid_plot(result: dict, path: Path) -> Path:
  """Per base optimizer: every Nexus point (the grid and the main arm) and the
  control, x = in-distribution loss change, y = OOD loss change (vs the base,
  mean over paired seeds; bars: the seed-resampled 95% intervals). Points left of
  or on x = 0 and below y = 0 are gains at no in-distribution cost."""
  comps = [
    c
    for c in result["comparisons"].values()
    if c["kind"] in ("grid", "nexus_vs_base", "control_vs_base")
  ]
  bases = list(dict.fromkeys(c["base"] for c in comps))
  fig, axes = new_figure(1, len(bases), (5.0 * len(bases), 4.0))
  for ax, base in zip(np.atleast_1d(axes), bases):
    for c in (c for c in comps if c["base"] == base):
      arm = result["arms"][c["nexus"]]
      x, y = c["changes"]["val_loss"], c["changes"]["ood_loss"]
      dx, dy = x["statistic"], y["statistic"]
      control = c["kind"] == "control_vs_base"
      ax.errorbar(
        dx,
        dy,
        xerr=_bar(x),
        yerr=_bar(y),
        fmt="s" if control else "o",
        color="gray" if control else "C0",
        capsize=3,
      )
      ax.annotate(
        "control" if control else f"γ={arm['inner_learning_rate']:g}, k={arm['inner_steps']}",
        (dx, dy),
        fontsize=7,
        xytext=(4, 4),
        textcoords="offset points",
      )
    ax.axhline(0, color="gray", lw=0.5)
    ax.axvline(0, color="gray", lw=0.5)
    ax.set(
      xlabel="Δ in-distribution loss vs base (nats/byte)",
      ylabel="Δ OOD loss vs base (nats/byte)",
      title=f"Nexus({arm_label(base)}) across γ × k",
    )
  return save_figure(fig, path)
