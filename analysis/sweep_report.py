"""The sweep's verdicts and Markdown report (`analysis.sweep` builds the dict;
`analysis.sweep_plots` draws it).

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

# Conditions that count for claim (a): alignment or a fitted curve.
CONNECTING = ("linear+align", "bezier", "bezier+align", "polychain", "polychain+align")


def best_connecting(sweep: dict, width: str, group: str) -> tuple[float, str | None]:
  """(smallest mean barrier over the connecting conditions, that condition);
  (nan, None) when no connecting condition measured the group."""
  found = [
    (sweep["barriers"][width][c][group]["mean"], c)
    for c in sweep["barriers"][width]
    if c in CONNECTING and group in sweep["barriers"][width][c]
  ]
  return min(found) if found else (float("nan"), None)


def tolerance(sweep: dict) -> float:
  """The "≈ 0" threshold: connected_tol × the zero predictor's train loss."""
  return sweep["config"]["connected_tol"] * sweep["zero_predictor_loss"]


def evaluate_claims(sweep: dict) -> dict:
  """{"a": {...}, "b": {...}}: the numbers and a one-line verdict each ("b"
  only when the sweep has both adamw and muon)."""
  claims = {"a": claim_a(sweep)}
  if {"adamw", "muon"} <= set(sweep["config"]["optimizers"]):
    claims["b"] = claim_b(sweep)
  return claims


def claim_a(sweep: dict) -> dict:
  """Claim (a) at the largest width: for every optimizer, the best connecting
  condition (`best_connecting`) has a mean intra-optimizer barrier ≤ tolerance."""
  tol = tolerance(sweep)
  large = str(max(int(w) for w in sweep["barriers"]))
  per_opt = {}
  for o in sweep["config"]["optimizers"]:
    group = f"{o}-{o}"
    linear = sweep["barriers"][large].get("linear", {}).get(group, {}).get("mean", float("nan"))
    best, condition = best_connecting(sweep, large, group)
    pairwise_best = sweep["barriers"][large]["best"][group]["mean"]
    per_opt[o] = {
      "linear": linear,
      "best_condition": condition,
      "best_condition_mean": best,
      "pairwise_best_mean": pairwise_best,
      "connected": bool(best <= tol),
    }
  held = all(v["connected"] for v in per_opt.values())
  return {
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


def claim_b(sweep: dict) -> dict:
  """Claim (b) at the smallest width, per condition: adamw-muon's mean barrier
  exceeds both intra-optimizer ones and the tolerance; decided on
  "best_linear" (the best straight path per pair) when the sweep has it."""
  tol = tolerance(sweep)
  small = str(min(int(w) for w in sweep["barriers"]))
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
  narrow = ", a narrow margin" if held_b and r["inter_over_intra"] < 2 else ""
  return {
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
      f"best {'straight ' if key == 'best_linear' else ''}path per pair): "
      f"adamw-muon {r['adamw-muon']:.2e} vs adamw-adamw "
      f"{r['adamw-adamw']:.2e}, muon-muon {r['muon-muon']:.2e} "
      f"(ratio {r['inter_over_intra']:.2f}{narrow}); "
      f"on the unaligned linear path it {'held' if held_linear else 'did not hold'}"
      f"; along fitted curves (cross-optimizer ones unconstrained) adamw-muon is "
      f"{rows.get('best', {}).get('adamw-muon', float('nan')):.2e}."
    ),
  }


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
