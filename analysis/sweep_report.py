"""The sweep's Markdown report (`analysis.sweep` builds the dict,
`analysis.sweep_claims` decides the claims, `analysis.sweep_plots` draws it).

The verdicts come first, one sentence each with the statistic, its 95% seed
interval and the pair counts; then where the result disagrees with the paper;
then the tables behind them: the secondary conditions, the barriers, the
endpoints (train loss and λ·K*/bound per run, so the reader sees both that
the runs converged and that the balls are active), ball membership, function
distances and Muon's effective radius.
"""

import numpy as np

from analysis import stats, sweep_claims

# What the paper says for each claim id (the report's "disagrees" section).
PAPER = {
  "a_zero": "same-optimizer solutions are connected at large width (barrier ≈ 0)",
  "a_trend": "the same-optimizer barrier falls with width",
  "b": "at small width AdamW and Muon solutions are separated by a barrier larger than "
  "either optimizer's own",
}


def _ci(s: dict | None, fmt: str = ".2e") -> str:
  if not s or not np.isfinite(s.get("statistic", np.nan)):
    return "–"
  return f"{s['statistic']:{fmt}} [{s['ci_low']:{fmt}}, {s['ci_high']:{fmt}}]"


def _table(header, rows) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
    "| " + " | ".join(str(c) for c in row) + " |" for row in rows
  ]


def disagreements(records: list[dict]) -> list[str]:
  """One line per primary headline claim that did not hold or is inconclusive."""
  lines = []
  for r in sweep_claims.headline(records):
    if r["verdict"] == stats.HELD:
      continue
    key = r["id"].split(":")[0]
    what = f" ({r['group']})" if r.get("group") else ""
    lines.append(
      f"- The paper says {PAPER[key]}{what}; here the verdict is **{r['verdict']}** "
      f"(statistic {r['statistic']:.3g}, interval [{r['ci_low']:.3g}, {r['ci_high']:.3g}], "
      f"{r['n_pairs_used']} pairs used, {r['n_pairs_excluded']} excluded"
      + (f"; inconclusive: {r['reason']})." if r.get("reason") else ").")
    )
  lines = lines or ["- None: every headline claim held on the primary condition."]
  cross = [r for r in records if r["primary"] and r["id"] == "cross"]
  for g in sorted({r["group"] for r in cross}):
    held = [r["width"] for r in cross if r["group"] == g and r["verdict"] == stats.HELD]
    lines.append(
      f"- {g}: the cross barrier is larger than both same-optimizer ones (interval above 1) "
      f"at widths {held or 'none'} of {sorted(r['width'] for r in cross if r['group'] == g)}"
      + (
        "; the paper expects that at small width, not (only) at large width."
        if held and min(held) > min(r["width"] for r in cross)
        else "."
      )
    )
  return lines


def _setup(sweep: dict) -> list[str]:
  c = sweep["config"]
  widths = sorted(int(w) for w in sweep["endpoints"])
  return [
    "# Optimizer-induced mode connectivity: relu2 sweep",
    "",
    f"Task: {c['task']['task']} (teacher width {c['task']['teacher_width']}, input dim "
    f"{c['task']['input_dim']}, {c['task']['n_train']} train / {c['task']['n_test']} test "
    f"points); widths {widths}; {c['seeds']} seeds per optimizer and width (seed s is one "
    f"initialization for every optimizer); full batch, {c['num_steps']} steps, "
    f"{c['schedule']} ({c['warmup_steps']} warmup steps, to {c['final_lr_fraction']} of the "
    f"learning rate); λ per optimizer and width: `weight_decay` of the config (the endpoint "
    f"table below).",
    f"Barrier: `{sweep['barrier_kind']}` (Entezari et al.: max_t L(t) − ((1−t)L(a) + t·L(b))) "
    f"on the train loss, {c['points']} points per path. Primary condition, declared before "
    f"the run: **{c['primary_condition']}**; the others are secondary. Convergence gate: a "
    f"seed counts when its train loss ≤ {c['converged_fraction']} × the zero predictor's "
    f"({sweep['zero_predictor_loss']:.3e}) = {sweep['convergence_threshold']:.2e}; pairs "
    f'with an unconverged end are excluded and counted. "≈ 0" means below '
    f"{c['connected_tol']} × the zero predictor's loss = {sweep['settings']['tol']:.2e}. "
    f"Statistics: seed median of per-seed median pair values, 95% percentile interval "
    f"over {c['n_resamples']} seed resamples (cluster bootstrap: pairs share seeds); a "
    f"verdict is held only when the interval excludes the null, inconclusive with fewer "
    f"than {c['min_pairs']} converged pairs.",
    "",
  ]


def _claims(sweep: dict) -> list[str]:
  records = sweep["claims"]
  lines = ["## Verdicts (primary condition)", ""]
  lines += [f"- {stats.describe(r)}" for r in sweep_claims.headline(records)]
  lines += ["", "## Where this disagrees with the paper", ""] + disagreements(records)
  lines += ["", "## Cross- vs same-optimizer barrier at every width (primary)", ""]
  rows = [
    [r["width"], r["group"], _ci(r, ".3g"), r["n_pairs_used"], r["n_pairs_excluded"], r["verdict"]]
    for r in records
    if r["primary"] and r["id"] == "cross"
  ]
  lines += _table(
    ["width", "pair", "ratio cross/max(same) [95%]", "pairs used", "excluded", "> 1?"], rows
  )
  lines += ["", "## Secondary conditions (reported, not used to decide)", ""]
  rows = [
    [r["id"], r.get("group"), r["condition"], r["width"] or "all", _ci(r, ".3g"), r["verdict"]]
    for r in records
    if not r["primary"]
  ]
  header = ["claim", "pair", "condition", "width", "statistic [95%]", "verdict"]
  return lines + _table(header, rows)


def _barriers(sweep: dict) -> list[str]:
  widths = sorted(sweep["barriers"], key=int)
  conditions = list(sweep["barriers"][widths[0]])
  groups = sorted(sweep["barriers"][widths[0]][conditions[0]])
  lines = ["", "## Barriers: seed median [95% interval] (pairs used/excluded)", ""]
  for cond in conditions:
    lines += [f"### {cond}", ""]
    rows = [
      [w]
      + [
        f"{_ci(s)} ({s['n_pairs_used']}/{s['n_pairs_excluded']})"
        for s in (sweep["barriers"][w][cond][g] for g in groups)
      ]
      for w in widths
    ]
    lines += _table(["width"] + groups, rows) + [""]
  return lines


def _leaf_range(values) -> str:
  v = np.asarray(values, np.float64)
  return f"{np.median(v):.2f} [{v.min():.2f}, {v.max():.2f}]"


def _endpoints(sweep: dict) -> list[str]:
  c = sweep["config"]
  lines = [
    "## Endpoints: train loss and λ·K*(θ)/bound per run",
    "",
    "Train loss / zero predictor's: median [max] over seeds; converged: seeds under the gate; "
    "λ·K*/bound per decayed leaf: median [min, max] over seeds (1 = the ball's edge; "
    "Newton–Schulz Muon's hidden matrix settles below it, see its radius below). "
    f"Active: the hidden matrix's median ≥ {c['active_fraction']} of the edge.",
    "",
  ]
  rows = []
  for w in sorted(sweep["endpoints"], key=int):
    for o, r in sweep["endpoints"][w]["runs"].items():
      rel = np.asarray(r["train_loss_relative"])
      # The hidden matrix's λ (the ball the claims are about), then any other
      # leaf's (Muon's AdamW side: the head and the biases).
      lams = {f"{v['weight_decay']:.3g}" for v in r["constraints"].values()}
      lam = r["constraints"].get("hidden/kernel", {}).get("weight_decay")
      lam = f"{lam:.3g}" if lam is not None else "–"
      others = sorted(lams - {lam})
      lam += f" (other leaves {', '.join(others)})" if others else ""
      cons = "; ".join(f"{k} {_leaf_range(v['per_seed'])}" for k, v in r["constraints"].items())
      hidden = r["constraints"].get("hidden/kernel")
      active = hidden is not None and np.median(hidden["per_seed"]) >= c["active_fraction"]
      rows.append(
        [
          w,
          o,
          lam,
          f"{np.median(rel):.1e} [{rel.max():.1e}]",
          f"{sum(r['converged'])}/{len(rel)}",
          "yes" if active else "no",
          cons,
        ]
      )
  lines += _table(
    ["width", "optimizer", "λ", "train loss / zero", "converged", "active", "λ·K*/bound"], rows
  )
  return lines


def _attribution(sweep: dict) -> list[str]:
  lines = [
    "",
    "## Attribution: every endpoint in every optimizer's ball",
    "",
    "Row optimizer's converged endpoints (median over seeds) measured in the column "
    "optimizer's ball at that width: max over leaves of λ_j·K*_j(θ)/bound_j (≤ 1 inside; "
    "for Muon compare with its measured radius, below). Function distance: RMS of "
    "f_a(x) − f_b(x) on the test inputs, seed median [95%].",
    "",
  ]
  for w in sorted(sweep["endpoints"], key=int):
    m = sweep["endpoints"][w]["membership"]
    rows = [[o] + [f"{v[b]:.2f}" for b in m["balls"]] for o, v in m["median"].items()]
    fd = sweep["endpoints"][w]["function_distance"]
    lines += [f"Width {w}:", ""] + _table(["endpoints \\ ball"] + m["balls"], rows) + [""]
    lines += [
      "Function distance: " + "; ".join(f"{g} {_ci(s, '.2g')}" for g, s in sorted(fd.items())),
      "",
    ]
  return lines


def _muon_radius(sweep: dict) -> list[str]:
  rows = [
    [w, f"{r['weight_decay']:.3g}", _ci(r, ".3f"), r["n_converged"]]
    for w in sorted(sweep["endpoints"], key=int)
    if (r := sweep["endpoints"][w]["muon_radius"])
  ]
  if not rows:
    return []
  return [
    "",
    "## Muon's effective radius",
    "",
    "λ·σ_max(W_hidden)/s over Muon's converged seeds (median [95%]): the radius it settles "
    "at, in units of the theoretical s/λ. Theory: 1 with the exact polar factor (SVD); "
    f"the quintic Newton–Schulz maps a lone unit singular value to {sweep['ns_unit_value']:.3f} "
    "and a full-rank spectrum into about [0.68, 1.13], so with it the radius sits between.",
    "",
  ] + _table(["width", "λ", "λ·σ_max/s", "seeds"], rows)


def render(sweep: dict) -> str:
  """report.md: the verdicts first, then the tables behind them."""
  lines = _setup(sweep) + _claims(sweep) + _barriers(sweep) + _endpoints(sweep)
  lines += _attribution(sweep) + _muon_radius(sweep)
  lines += [
    "",
    "## Files",
    "",
    "- `sweep.json`: everything above; `claims` holds one machine-readable record per claim "
    "(claim, verdict, statistic, ci_low, ci_high, n_seeds, n_pairs_used, n_pairs_excluded, "
    "condition, width, and id/primary/group), `barrier_tables` every pair's barrier.",
    "- `connectivity/wWIDTH/CONDITION/connectivity.json`: every pair along its path.",
    "- `train/OPT_wWIDTH/`: the train.py runs; `train/*.log` their logs.",
  ]
  lines += [f"- `{p}`" for p in sweep.get("plots", [])]
  t = sweep.get("timings_s", {})
  if t:
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items())]
  return "\n".join(lines) + "\n"
