"""The sweep's PNGs (WORKDIR/plots/): the primary condition's barrier vs width
per optimizer pair and the cross/same ratio vs width (seed medians with their
95% intervals as bands), the constraint values λ·K*(θ) and the train losses vs width."""

from pathlib import Path

import numpy as np

from analysis.plots import new_figure, save_figure


def _figure(cols, size):
  fig, axes = new_figure(1, cols, size, squeeze=False)
  return fig, axes[0]


def _band(ax, widths, stats, label, **style):
  """Median line with its interval as a shaded band (NaN where undefined)."""
  get = lambda k: np.array([s[k] if s else np.nan for s in stats], dtype=np.float64)
  (line,) = ax.plot(widths, get("statistic"), marker="o", label=label, **style)
  ax.fill_between(widths, get("ci_low"), get("ci_high"), color=line.get_color(), alpha=0.2)


def write_plots(sweep: dict, workdir) -> list[Path]:
  """plots/barrier_vs_width.png, plots/ratio_vs_width.png,
  plots/constraints_vs_width.png, plots/loss_vs_width.png."""
  out = Path(workdir) / "plots"
  primary = sweep["config"]["primary_condition"]
  widths = sorted(int(w) for w in sweep["barriers"])
  groups = sorted(sweep["barriers"][str(widths[0])][primary])
  tol = sweep["settings"]["tol"]

  fig, axes = _figure(1, (5.0, 3.8))
  for g in groups:
    a, b = g.split("-")
    stats = [sweep["barriers"][str(w)][primary][g] for w in widths]
    floor = [dict(s, statistic=max(s["statistic"], tol / 100)) for s in stats]
    _band(axes[0], widths, floor, g, ls="-" if a == b else "--")
  axes[0].axhline(tol, color="k", ls=":", lw=1, label="≈ 0 tolerance")
  axes[0].set(xscale="log", xlabel="width", title=f"{primary}, train loss")
  axes[0].set_yscale("symlog", linthresh=tol / 10)
  axes[0].set_ylim(bottom=0)  # Barriers are ≥ 0; symlog would show a negative decade.
  axes[0].set_ylabel("barrier: seed median, 95% band")
  axes[0].legend(fontsize=7)
  written = [save_figure(fig, out / "barrier_vs_width.png")]

  fig, axes = _figure(1, (5.0, 3.8))
  cross = [r for r in sweep["claims"] if r["primary"] and r["id"] == "cross"]
  for g in sorted({r["group"] for r in cross}):
    rows = sorted((r for r in cross if r["group"] == g), key=lambda r: r["width"])
    _band(axes[0], [r["width"] for r in rows], rows, g)
  axes[0].axhline(1.0, color="k", ls=":", lw=1, label="cross = same")
  axes[0].set(
    xscale="log",
    yscale="log",
    xlabel="width",
    ylabel="cross / max(same) barrier, 95% band",
    title=f"Is the cross barrier larger? ({primary})",
  )
  axes[0].legend(fontsize=7)
  written.append(save_figure(fig, out / "ratio_vs_width.png"))

  optimizers = list(sweep["config"]["optimizers"])
  fig, axes = _figure(len(optimizers), (3.8 * len(optimizers), 3.4))
  for ax, o in zip(axes, optimizers, strict=True):
    runs = [sweep["endpoints"][str(w)]["runs"][o] for w in widths]
    for leaf in sorted({leaf for r in runs for leaf in r["constraints"]}):
      vals = [np.asarray(r["constraints"].get(leaf, {}).get("per_seed", [np.nan])) for r in runs]
      med = np.array([np.median(v) for v in vals])
      lo, hi = np.array([v.min() for v in vals]), np.array([v.max() for v in vals])
      ax.errorbar(widths, med, yerr=[med - lo, hi - med], marker="o", capsize=2, label=leaf)
    ax.axhline(1.0, color="k", ls=":", lw=1, label="ball edge")
    ax.set(xscale="log", xlabel="width", title=f"{o}: λ·K*(θ)/bound (min–max)", ylim=(0, 1.3))
    ax.legend(fontsize=7)
  written.append(save_figure(fig, out / "constraints_vs_width.png"))

  fig, axes = _figure(1, (4.5, 3.4))
  for o in optimizers:
    rel = [np.asarray(sweep["endpoints"][str(w)]["runs"][o]["train_loss_relative"]) for w in widths]
    med = np.array([np.median(r) for r in rel])
    axes[0].errorbar(
      widths,
      np.maximum(med, 1e-12),
      yerr=[med - [r.min() for r in rel], [r.max() for r in rel] - med],
      marker="o",
      capsize=2,
      label=o,
    )
  axes[0].axhline(sweep["config"]["converged_fraction"], color="k", ls=":", lw=1, label="gate")
  axes[0].set(
    xscale="log",
    yscale="log",
    xlabel="width",
    ylabel="train loss / zero predictor's (min–max)",
    title="Endpoint train losses",
  )
  axes[0].legend(fontsize=7)
  written.append(save_figure(fig, out / "loss_vs_width.png"))
  return written
