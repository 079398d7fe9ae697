"""The sweep's PNGs (WORKDIR/plots/): barrier vs width per optimizer pair, the
constraint values λ·K*(θ) vs width, and the endpoint losses vs width."""

from pathlib import Path

import numpy as np

from analysis.plots import new_figure, save_figure


def _figure(cols, size):
  fig, axes = new_figure(1, cols, size, squeeze=False)
  return fig, axes[0]


def write_plots(sweep: dict, workdir) -> list[Path]:
  """plots/barrier_vs_width.png (a panel per condition), plots/constraints_vs_width.png,
  plots/loss_vs_width.png."""
  out = Path(workdir) / "plots"
  widths = sorted(int(w) for w in sweep["barriers"])
  conditions = list(sweep["barriers"][str(widths[0])])
  groups = sorted({g for w in widths for c in conditions for g in sweep["barriers"][str(w)][c]})
  tol = sweep["claims"]["a"]["tolerance"]
  fig, axes = _figure(len(conditions), (3.6 * len(conditions), 3.6))
  for ax, condition in zip(axes, conditions):
    for g in groups:
      stats = [sweep["barriers"][str(w)][condition].get(g) for w in widths]
      mean = np.array([s["mean"] if s else np.nan for s in stats])
      std = np.array([s["std"] if s else np.nan for s in stats])
      same = g.split("-")[0] == g.split("-")[1]
      ax.errorbar(
        widths,
        np.maximum(mean, 1e-7),
        yerr=std,
        marker="o" if same else "s",
        ls="-" if same else "--",
        capsize=2,
        label=g,
      )
    ax.axhline(tol, color="k", ls=":", lw=1, label="≈ 0 tolerance")
    ax.set(xscale="log", yscale="log", xlabel="width", title=condition)
  axes[0].set_ylabel(f"train barrier ({sweep['barrier_kind']}), mean ± std over pairs")
  axes[-1].legend(fontsize=7)
  written = [save_figure(fig, out / "barrier_vs_width.png")]

  optimizers = list(sweep["config"]["optimizers"])
  fig, axes = _figure(len(optimizers), (3.8 * len(optimizers), 3.4))
  for ax, o in zip(axes, optimizers):
    leaves = sorted({leaf for w in widths for leaf in sweep["runs"][str(w)][o]["constraints"]})
    for leaf in leaves:
      vals = [sweep["runs"][str(w)][o]["constraints"].get(leaf) for w in widths]
      mean = np.array([v["mean"] if v else np.nan for v in vals])
      lo = np.array([v["min"] if v else np.nan for v in vals])
      hi = np.array([v["max"] if v else np.nan for v in vals])
      ax.errorbar(widths, mean, yerr=[mean - lo, hi - mean], marker="o", capsize=2, label=leaf)
    ax.axhline(1.0, color="k", ls=":", lw=1, label="ball edge")
    title = f"{o}: λ·K*(θ)/bound (min–max over seeds)"
    ax.set(xscale="log", xlabel="width", title=title, ylim=(0, 1.3))
    ax.legend(fontsize=7)
  written.append(save_figure(fig, out / "constraints_vs_width.png"))

  fig, axes = _figure(1, (4.5, 3.4))
  for o in optimizers:
    axes[0].plot(
      widths,
      [sweep["runs"][str(w)][o]["final_train_loss"] for w in widths],
      marker="o",
      label=f"{o} train",
    )
    axes[0].plot(
      widths,
      [sweep["runs"][str(w)][o]["final_test_loss"] for w in widths],
      marker="x",
      ls="--",
      label=f"{o} test",
    )
  axes[0].set(
    xscale="log",
    yscale="log",
    xlabel="width",
    ylabel="final loss (mean of seeds)",
    title="Endpoint losses",
  )
  axes[0].legend(fontsize=7)
  written.append(save_figure(fig, out / "loss_vs_width.png"))
  return written
