"""PNG figures of the connectivity analysis (matplotlib, Agg, no pyplot state).

Each function takes numpy-convertible arrays as the analysis functions return
them, writes one PNG and returns its path:

- `plot_path_losses`: loss along the path, one line per pair (test dashed);
- `plot_barrier_matrix`: the N×N barrier heatmap, models grouped by optimizer;
- `plot_constraints_along_path`: λ·K*(φ(t)) per leaf, with the ball's edge at 1;
- `plot_spectra_along_path`: σ_max, stable rank, effective rank per matrix.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, not
pyplot, so they need no display and leave no global figure state behind.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_path_losses(
  ts,
  losses_PxT,
  out_path,
  labels: Sequence[str] | None = None,
  test_losses_PxT=None,
  ylabel: str = "loss",
  title: str = "Loss along the path",
  log_scale: bool = False,
) -> Path:
  """One line per pair (rows of losses_PxT) over t; test losses dashed."""
  ts, losses = np.asarray(ts), np.atleast_2d(np.asarray(losses_PxT))
  _check_last_axis(losses, ts, "losses_PxT")
  fig, ax = new_figure(1, 1, (6.5, 4.0))
  colors = palette(losses.shape[0])
  for p, row in enumerate(losses):
    ax.plot(
      ts,
      row,
      color=colors[p],
      lw=1.5,
      label=None
      if labels is None
      else f"{labels[p]} (train)"
      if test_losses_PxT is not None
      else labels[p],
    )
  if test_losses_PxT is not None:
    test = np.atleast_2d(np.asarray(test_losses_PxT))
    _check_last_axis(test, ts, "test_losses_PxT")
    for p, row in enumerate(test):
      ax.plot(
        ts,
        row,
        color=colors[p],
        lw=1.2,
        ls="--",
        label=None if labels is None else f"{labels[p]} (test)",
      )
  for edge in (0.0, 1.0):
    ax.axvline(edge, color="0.7", lw=0.8, zorder=0)
  ax.set(xlabel="t", ylabel=ylabel, title=title)
  if log_scale:
    ax.set_yscale("log")
  if labels is not None and len(labels) <= 12:
    ax.legend(fontsize=8)
  return save_figure(fig, out_path)


def plot_barrier_matrix(
  matrix_NxN,
  groups: Sequence[str],
  out_path,
  title: str = "Loss barrier",
  cbar_label: str = "barrier",
) -> Path:
  """Heatmap of pairwise barriers, models sorted by group (e.g. optimizer),
  with lines between groups and each group named once."""
  matrix = np.asarray(matrix_NxN, float)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or len(groups) != len(matrix):
    raise ValueError(
      f"Need an N×N matrix and N group names; got {matrix.shape} and {len(groups)} names."
    )
  order = np.argsort(np.asarray(groups), kind="stable")
  matrix, sorted_groups = matrix[np.ix_(order, order)], [groups[i] for i in order]
  fig, ax = new_figure(1, 1, (6.0, 5.2))
  image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", interpolation="nearest")
  fig.colorbar(image, ax=ax, label=cbar_label)
  starts = [
    i for i in range(len(sorted_groups)) if i == 0 or sorted_groups[i] != sorted_groups[i - 1]
  ]
  ends = starts[1:] + [len(sorted_groups)]
  for s in starts[1:]:
    ax.axhline(s - 0.5, color="white", lw=2)
    ax.axvline(s - 0.5, color="white", lw=2)
  centers = [(s + e - 1) / 2 for s, e in zip(starts, ends)]
  names = [sorted_groups[s] for s in starts]
  ax.set_xticks(centers, names, rotation=30, ha="right")
  ax.set_yticks(centers, names)
  ax.set_title(title)
  return save_figure(fig, out_path)


def plot_constraints_along_path(
  ts, values: Mapping[str, np.ndarray], out_path, title: str = "λ·K*(θ) along the path"
) -> Path:
  """One line per leaf name; values (T,) or (P, T) (pairs drawn faint)."""
  ts = np.asarray(ts)
  fig, ax = new_figure(1, 1, (6.5, 4.0))
  colors = palette(len(values))
  for color, (name, v) in zip(colors, values.items()):
    _lines(ax, ts, np.asarray(v), color, name)
  ax.axhline(1.0, color="k", ls=":", lw=1.0, label="ball edge (= 1)")
  ax.set(xlabel="t", ylabel="λ·K*(θ)", title=title)
  ax.legend(fontsize=8)
  return save_figure(fig, out_path)


def plot_spectra_along_path(
  ts, stats: Mapping[str, Mapping[str, np.ndarray]], out_path, title: str = "Spectra along the path"
) -> Path:
  """Three panels (σ_max, stable rank, effective rank), one line per matrix;
  stats as `analysis.spectra.spectra_along_path` returns them."""
  ts = np.asarray(ts)
  panels = ("sigma_max", "stable_rank", "effective_rank")
  fig, axes = new_figure(1, 3, (13.0, 3.8))
  colors = palette(len(stats))
  for ax, stat in zip(axes, panels):
    for color, (name, leaf_stats) in zip(colors, stats.items()):
      _lines(ax, ts, np.asarray(leaf_stats[stat]), color, name)
    ax.set(
      xlabel="t",
      title={
        "sigma_max": "σ_max",
        "stable_rank": "stable rank ‖W‖_F²/σ_max²",
        "effective_rank": "effective rank exp H(σ/Σσ)",
      }[stat],
    )
  axes[0].legend(fontsize=8)
  fig.suptitle(title)
  return save_figure(fig, out_path)


def _lines(ax, ts, v, color, label):
  """(T,): one line; (P, T): faint lines per pair and their mean, labelled once."""
  if v.ndim == 1:
    _check_last_axis(v, ts, label)
    ax.plot(ts, v, color=color, lw=1.5, label=label)
    return
  v = v.reshape(-1, v.shape[-1])
  _check_last_axis(v, ts, label)
  for row in v:
    ax.plot(ts, row, color=color, lw=0.6, alpha=0.3)
  ax.plot(ts, v.mean(axis=0), color=color, lw=1.8, label=f"{label} (mean of {len(v)})")


def _check_last_axis(values, ts, name):
  if values.shape[-1] != ts.shape[-1]:
    raise ValueError(f"{name} has {values.shape[-1]} points per path but ts has {ts.shape[-1]}.")


# The figure helpers every experiment's PNGs use (connectivity_report, sweep_plots,
# gpt2_spectra_report, nexus_plots): an Agg Figure without pyplot, a palette, a PNG writer.


def new_figure(rows, cols, size, squeeze: bool = True):
  """(Figure, axes) on the Agg canvas; squeeze as in Figure.subplots."""
  fig = Figure(figsize=size, layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, cols, squeeze=squeeze)
  return fig, axes


def palette(n):
  """n distinguishable colors: tab10 up to 10, else evenly along viridis."""
  from matplotlib import colormaps  # Only the colormap registry, no pyplot.

  cmap = colormaps["tab10" if n <= 10 else "viridis"]
  return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(max(n, 1))]


def save_figure(fig, out_path, dpi: int = 120) -> Path:
  out_path = Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out_path, dpi=dpi)
  return out_path
