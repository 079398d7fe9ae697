"""The Nexus mixture experiment's Markdown report (`analysis.nexus_mixture`
builds the result dict, `analysis.nexus_claims` its comparisons and verdicts,
`analysis.nexus_plots` its plots)."""

from pathlib import Path

import numpy as np

from analysis import stats
from analysis.nexus_claims import EXACT_MATCH_PREFIX, run_metrics
from analysis.nexus_runs import CONTROL_PREFIX, NEXUS_PREFIX

KIND_TITLES = {
  "nexus_vs_base": "Nexus vs its base optimizer (the paper's claims)",
  "nexus_vs_control": "Nexus vs its control (same pseudo-gradient norm, no alignment)",
  "control_vs_base": "The control vs the base optimizer (the step's size alone)",
  "grid": "γ × k grid points vs the base optimizer",
}
_NAMES = {"adamw": "AdamW", "muon": "Muon", "lion": "Lion", "lion_k": "Lion-K", "sgd": "SGD"}


def arm_label(arm: str) -> str:
  """ "nexus_adamw" -> "Nexus(AdamW)", "nexuscontrol_adamw" -> "Control(AdamW)",
  "nexus_adamw_g0.08_k3" -> "Nexus(AdamW, γ=0.08, k=3)": an arm's name in tables and plots."""
  for prefix, who in ((CONTROL_PREFIX, "Control"), (NEXUS_PREFIX, "Nexus")):
    if arm.startswith(prefix):
      base, *grid = arm[len(prefix) :].split("_g")
      if grid:
        g, k = grid[0].split("_k")
        return f"{who}({_NAMES.get(base, base)}, γ={g}, k={k})"
      return f"{who}({_NAMES.get(base, base)})"
  return _NAMES.get(arm, arm)


def arm_stats(runs: dict) -> dict[str, dict[str, dict]]:
  """{arm: {metric: {"mean", "std", "values"}}} over the arm's seeds."""
  out = {}
  for arm, seeds in runs.items():
    per_seed = [run_metrics(seeds[s]) for s in sorted(seeds, key=int)]
    out[arm] = {
      k: {
        "mean": float(np.mean([p.get(k, np.nan) for p in per_seed])),
        "std": float(np.std([p.get(k, np.nan) for p in per_seed])),
        "values": [p.get(k, np.nan) for p in per_seed],
      }
      for k in per_seed[0]
    }
  return out


def verdict_lines(comparisons: dict) -> list[str]:
  """Markdown: per comparison kind, one sentence per claim (analysis.stats.describe)."""
  lines = []
  for kind, title in KIND_TITLES.items():
    records = [r for c in comparisons.values() if c["kind"] == kind for r in c["claims"].values()]
    if records:
      lines += [f"### {title}", ""] + [f"- {stats.describe(r)}" for r in records] + [""]
  return lines or ["- No arm has its counterpart.", ""]


def grid_rows(comparisons: dict, arms: dict) -> list[list[str]]:
  """The γ × k curve as table rows: per grid point (and the main Nexus and control
  arms), the in-distribution and OOD loss change vs the base with intervals."""
  rows = []
  for c in comparisons.values():
    if c["kind"] not in ("grid", "nexus_vs_base", "control_vs_base"):
      continue
    a = arms[c["nexus"]]
    eq, ood = c["claims"]["equal_loss"], c["claims"]["lower_ood"]
    d_id = c["changes"]["val_loss"]
    rows.append(
      [
        arm_label(c["nexus"]),
        f"{a['inner_learning_rate']:g}",
        str(a["inner_steps"]),
        f"{d_id['statistic']:+.4f} [{d_id['ci_low']:+.4f}, {d_id['ci_high']:+.4f}] "
        f"({eq['statistic']:.1%}; equal: {eq['verdict']})",
        f"{ood['statistic']:+.4f} [{ood['ci_low']:+.4f}, {ood['ci_high']:+.4f}] "
        f"(lower: {ood['verdict']})",
      ]
    )
  return rows


# ---------------------------------------------------------------------------
# The Markdown report.


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (
    ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    + ["| " + " | ".join(r) + " |" for r in rows]
    + [""]
  )


def render(result: dict, plots: list[Path]) -> str:
  config, runs = result["config"], result["runs"]
  per_arm = arm_stats(runs)
  arms = list(runs)
  seeds = sorted({s for r in runs.values() for s in r}, key=int)
  lines = [
    "# Nexus on the prose + code + math mixture",
    "",
    f"GPT-2 {config['size']}, {config['steps']} steps of {config['batch']} × "
    f"{config['seq_len']} bytes: every arm reads the same "
    f"{result['token_budget']:,} tokens (Nexus: {config['batch'] // 3} sequences of "
    f"each source per step, k = {config['inner_steps']} inner steps of γ = "
    f"{config['inner_learning_rate']}; control arms: {config.get('control')}, the same "
    "pseudo-gradient norm as Nexus at every step without alignment pressure). "
    f"Seeds {', '.join(seeds)}; mean ± std over seeds; runs with the same seed share "
    "the initialization (not the data order: Nexus reads per-source batches). "
    f"Runtime {result.get('runtime_s', 0):.0f} s.",
    "",
    "## Verdicts",
    "",
    "Each from a seed-resampled 95% interval of the mean paired difference "
    f"({config.get('n_resamples', 2000)} resamples, analysis.stats): held only when "
    "the interval excludes the null on the claimed side; fewer than "
    f"{stats.MIN_SEEDS} seeds give no interval (inconclusive). nexus.json's "
    '"verdicts" holds the records.',
    "",
  ]
  lines += verdict_lines(result["comparisons"])
  grid = grid_rows(result["comparisons"], result["arms"])
  if grid:
    lines += ["## In-distribution vs OOD change across γ × k (vs the base)", ""]
    lines += _table(
      ["arm", "γ", "k", "Δ val loss [95%] (size rel. to loss)", "Δ OOD loss [95%]"], grid
    )
  lines += ["## Per arm", ""]
  rows = []
  first = per_arm[arms[0]]
  keys = (
    [k for k in first if k.startswith("val_loss")]
    + [k for k in first if k.startswith("ood_loss")]
    + [k for k in first if k.startswith(EXACT_MATCH_PREFIX)]
    + [
      "ood_gap",
      "grad_cosine",
      "minima_distance",
      "minima_barrier",
      "distance_to_start",
      "relative_spread",
      "loss_drop",
      "first_order_proxy",
      "param_norm",
    ]
  )
  for k in keys:
    fmt = ".4f" if k in ("minima_barrier", "first_order_proxy") else ".3f"
    rows.append(
      [k] + [f"{per_arm[a][k]['mean']:{fmt}} ± {per_arm[a][k]['std']:{fmt}}" for a in arms]
    )
  lines += _table(["metric"] + [arm_label(a) for a in arms], rows)
  em = config.get("exact_match", {})
  lines += [
    "Rows: validation loss per source and its mean (nats/byte); OOD loss per held-out "
    "set and its mean; exact_match/PROMPT: the share of "
    f"{2 * em.get('num_per_family', 0)} fresh held-out arithmetic problems (percent, gcd) "
    "whose greedy answer is exactly right, given the worked solution (worked) or only "
    "the question (question; the model's context cuts long gcd solutions); "
    "ood_gap: OOD − in-distribution mean loss; grad_cosine: the mean "
    "pairwise cosine of the sources' gradients "
    "on their validation batches; minima_*: from the final point, "
    f"{config['minima']['steps']} Adam steps (lr {config['minima']['learning_rate']}) on "
    f"each source's first {config['minima']['num_batches']} × "
    f"{config['minima']['batch_size']} training windows alone: the mean pairwise "
    "distance between those minima, the mean barrier (mixture loss) on the segments "
    "between them, their mean distance from the start, pairwise / start distance, the "
    "mean loss drop, and the first-order proxy L_s(θ) − L_s(θ − γ∇L_mix) with γ = "
    f"{config['minima']['proxy_step']}; param_norm: ‖θ‖ (distances scale with it).",
    "",
  ]
  cos_rows = []
  for a in arms:
    cos = np.mean([np.asarray(r["grad_cosine"]) for r in runs[a].values()], axis=0)
    k = cos.shape[0]
    cos_rows.append(
      [arm_label(a)] + [f"{cos[i, j]:+.3f}" for i in range(k) for j in range(i + 1, k)]
    )
    pair_names = [
      f"{result['sources'][i]}–{result['sources'][j]}" for i in range(k) for j in range(i + 1, k)
    ]
  lines += ["## Gradient cosines per source pair (mean over seeds)", ""]
  lines += _table(["arm"] + pair_names, cos_rows)
  lines += ["## Paired differences (arm − reference, per seed)", ""]
  for c in result["comparisons"].values():
    shown = ["val_loss", "ood_loss", "ood_gap", "grad_cosine", "minima_distance"]
    shown += [k for k in c["metrics"] if k.startswith(EXACT_MATCH_PREFIX)]
    rows = [
      [
        k,
        ", ".join(f"{d:+.4f}" for d in c["metrics"][k]["diffs"]),
        f"{c['metrics'][k]['diff_mean']:+.4f}",
      ]
      for k in shown
    ]
    lines += [
      f"{arm_label(c['nexus'])} − {arm_label(c['base'])}, seeds {', '.join(c['seeds'])}:",
      "",
    ]
    lines += _table(["metric", "per seed", "mean"], rows)
  lines += [
    "Plots: " + ", ".join(f"`{p.name}`" for p in plots),
    "",
    "γ (inner_learning_rate) is not tuned for GPT-2; a verdict here is about this "
    "model, corpus, budget and γ, not about Nexus in general.",
    "",
  ]
  return "\n".join(lines)
