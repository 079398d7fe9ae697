"""The sweep's verdicts, plots and Markdown report (`analysis.sweep` builds the dict).

Claims checked (the barrier is the config's ``barrier_kind`` on the train loss,
averaged over the pairs of an optimizer pair; "≈ 0" means below
``connected_tol`` × the zero predictor's train loss):

(a) at the largest width, same-optimizer solutions are connected: for every
    optimizer, the intra-optimizer barrier is ≈ 0 after alignment or along a
    fitted curve (the best of those conditions, pair by pair);
(b) at the smallest width, AdamW and Muon solutions are separated: the
    adamw-muon barrier exceeds both intra-optimizer barriers (adamw-adamw,
    muon-muon) and is not ≈ 0, on the best straight path per pair (linear,
    with or without alignment: "best_linear"). Straight paths treat intra and
    inter pairs alike; fitted curves do not when ``project`` is on (only
    same-optimizer curves are kept in a ball; a cross-optimizer curve has no
    common ball and is fitted free), so they are reported, not used.
"""

from pathlib import Path

import numpy as np

from analysis.plots import new_figure, save_figure

# Conditions that count for claim (a): alignment or a fitted curve.
CONNECTING = ("linear+align", "bezier", "bezier+align", "polychain", "polychain+align")


def _best_connecting(sweep: dict, width: str, group: str):
  """(smallest mean barrier over the connecting conditions, that condition)."""
  found = [
    (sweep["barriers"][width][c][group]["mean"], c)
    for c in sweep["barriers"][width]
    if c in CONNECTING and group in sweep["barriers"][width][c]
  ]
  return min(found) if found else (float("nan"), None)


def evaluate_claims(sweep: dict) -> dict:
  """{"a": {...}, "b": {...}}: the numbers and a one-line verdict each."""
  config = sweep["config"]
  tol = config["connected_tol"] * sweep["zero_predictor_loss"]
  widths = sorted(int(w) for w in sweep["barriers"])
  large, small = str(widths[-1]), str(widths[0])
  optimizers = list(config["optimizers"])
  claims = {}

  per_opt = {}
  for o in optimizers:
    group = f"{o}-{o}"
    linear = sweep["barriers"][large].get("linear", {}).get(group, {}).get("mean", float("nan"))
    best, condition = _best_connecting(sweep, large, group)
    pairwise_best = sweep["barriers"][large]["best"][group]["mean"]
    per_opt[o] = {
      "linear": linear,
      "best_condition": condition,
      "best_condition_mean": best,
      "pairwise_best_mean": pairwise_best,
      "connected": bool(best <= tol),
    }
  held = all(v["connected"] for v in per_opt.values())
  claims["a"] = {
    "claim": "At large width, same-optimizer solutions are connected (barrier ≈ 0, at least "
    "after alignment or along a fitted curve).",
    "width": int(large),
    "tolerance": tol,
    "per_optimizer": per_opt,
    "held": held,
    "verdict": (
      f"Claim (a) {'HELD' if held else 'DID NOT HOLD'} at width {large}: "
      + "; ".join(
        f"{o}-{o} {v['best_condition_mean']:.2e} ({v['best_condition']}, linear {v['linear']:.2e})"
        for o, v in per_opt.items()
      )
      + f" vs tolerance {tol:.2e}."
    ),
  }

  if {"adamw", "muon"} <= set(optimizers):
    b = sweep["barriers"][small]
    rows = {}
    for condition in list(b):
      get = lambda g: b[condition].get(g, {}).get("mean", float("nan"))
      inter, intra = get("adamw-muon"), max(get("adamw-adamw"), get("muon-muon"))
      rows[condition] = {
        "adamw-muon": inter,
        "adamw-adamw": get("adamw-adamw"),
        "muon-muon": get("muon-muon"),
        "inter_over_intra": inter / max(intra, 1e-12),
        "separated": bool(inter > intra and inter > tol),
      }
    key = "best_linear" if "best_linear" in rows else "best"
    held_b = rows[key]["separated"]
    held_linear = rows.get("linear", {}).get("separated")
    r = rows[key]
    claims["b"] = {
      "claim": "At small width, AdamW and Muon solutions can be separated by a loss barrier "
      "(inter-optimizer barrier > intra-optimizer barriers).",
      "width": int(small),
      "tolerance": tol,
      "per_condition": rows,
      "held": held_b,
      "decided_on": key,
      "held_on_linear_path": held_linear,
      "verdict": (
        f"Claim (b) {'HELD' if held_b else 'DID NOT HOLD'} at width {small} ({key}: the "
        f"best {'straight ' if key == 'best_linear' else ''}path per pair): adamw-muon {r['adamw-muon']:.2e} vs adamw-adamw "
        f"{r['adamw-adamw']:.2e}, muon-muon {r['muon-muon']:.2e} "
        f"(ratio {r['inter_over_intra']:.2f}{', a narrow margin' if held_b and r['inter_over_intra'] < 2 else ''}); "
        f"on the unaligned linear path it {'held' if held_linear else 'did not hold'}"
        f"; along fitted curves (cross-optimizer ones unconstrained) adamw-muon is "
        f"{rows.get('best', {}).get('adamw-muon', float('nan')):.2e}."
      ),
    }
  return claims


# ---------------------------------------------------------------------------
# Plots.


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
    ax.set(
      xscale="log", xlabel="width", title=f"{o}: λ·K*(θ)/bound (min–max over seeds)", ylim=(0, 1.3)
    )
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


# ---------------------------------------------------------------------------
# Markdown.


def _table(header, rows) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
    "| " + " | ".join(str(c) for c in row) + " |" for row in rows
  ]


def render(sweep: dict) -> str:
  """report.md: the verdicts first, then the tables behind them."""
  c, claims = sweep["config"], sweep["claims"]
  widths = sorted(int(w) for w in sweep["barriers"])
  conditions = list(sweep["barriers"][str(widths[0])])
  groups = sorted({g for w in widths for g in sweep["barriers"][str(w)]["best"]})
  lines = [
    "# Optimizer-induced mode connectivity: relu2 sweep",
    "",
    f"Task: {c['task']['task']} (teacher width {c['task']['teacher_width']}, input dim "
    f"{c['task']['input_dim']}, {c['task']['n_train']} train / {c['task']['n_test']} test "
    f"points); widths {widths}; {c['seeds']} seeds per optimizer and width; "
    f"{c['num_steps']} steps; {c['points']} points per path; fitted curves: "
    f"{c['num_bends']}-bend, {c['fit_steps']} Adam steps"
    f"{', bends projected into the ball for same-optimizer pairs' if c['project'] else ''}.",
    f"Barrier: `{sweep['barrier_kind']}` kind on the train loss "
    "(linear = Entezari et al.: max_t L(t) − ((1−t)L(a) + t·L(b)); mean = Frankle et al.), "
    f'mean over the pairs. "≈ 0" means below {c["connected_tol"]} × the zero '
    f"predictor's train loss {sweep['zero_predictor_loss']:.3e} = "
    f"{claims['a']['tolerance']:.2e}.",
    "",
    "## Claims",
    "",
  ]
  for key in ("a", "b"):
    if key in claims:
      lines += [f"**({key})** {claims[key]['claim']}", "", f"- {claims[key]['verdict']}", ""]
  lines += ["Barrier per condition at the smallest width (claim b):", ""]
  if "b" in claims:
    lines += _table(
      ["condition", "adamw-muon", "adamw-adamw", "muon-muon", "inter/intra", "separated"],
      [
        [
          cond,
          f"{r['adamw-muon']:.2e}",
          f"{r['adamw-adamw']:.2e}",
          f"{r['muon-muon']:.2e}",
          f"{r['inter_over_intra']:.2f}",
          r["separated"],
        ]
        for cond, r in claims["b"]["per_condition"].items()
      ],
    ) + [""]
  lines += [
    "## Barriers (mean ± std over pairs)",
    "",
    "`best` takes, pair by pair, the smallest barrier over the conditions; "
    "`best_linear` over the straight-line conditions only."
    + (
      " Fitted curves of same-optimizer pairs are projected into that optimizer's "
      "ball; cross-optimizer curves are fitted free."
      if c["project"]
      else ""
    ),
    "",
  ]
  for cond in conditions:
    lines += [f"### {cond}", ""]
    rows = [
      [w]
      + [
        (lambda s: f"{s['mean']:.2e} ± {s['std']:.1e}" if s else "–")(
          sweep["barriers"][str(w)][cond].get(g)
        )
        for g in groups
      ]
      for w in widths
    ]
    lines += _table(["width"] + groups, rows) + [""]
  lines += [
    "## Endpoints: losses and constraint values",
    "",
    "λ·K*(θ)/bound per layer (mean over seeds, [min, max]); ≈ 1 means the ball is "
    "active (Muon with Newton–Schulz may sit up to ~1.13).",
    "",
  ]
  rows = []
  for w in widths:
    for o, r in sweep["runs"][str(w)].items():
      cons = "; ".join(
        f"{leaf} {v['mean']:.2f} [{v['min']:.2f}, {v['max']:.2f}]"
        for leaf, v in r["constraints"].items()
      )
      lam = sorted({f"{v['weight_decay']:.2f}" for v in r["constraints"].values()})
      rows.append(
        [w, o, "/".join(lam), f"{r['final_train_loss']:.2e}", f"{r['final_test_loss']:.2e}", cons]
      )
  lines += _table(["width", "optimizer", "λ", "train loss", "test loss", "λ·K*/bound"], rows)
  lines += [
    "",
    "## Files",
    "",
    "- `sweep.json`: everything above, per width, condition and optimizer pair.",
    "- `connectivity/wWIDTH/CONDITION/connectivity.json`: every pair (losses along "
    "the path, both barriers, constraints, spectra) and, where plotted, PNGs.",
    "- `train/OPT_wWIDTH/`: the train.py runs; `train/*.log` their logs.",
  ]
  lines += [f"- `{p}`" for p in sweep.get("plots", [])]
  t = sweep.get("timings_s", {})
  if t:
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()), ""]
  return "\n".join(lines) + "\n"
