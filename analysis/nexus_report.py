"""The Nexus mixture experiment's comparisons, verdicts and Markdown report
(`analysis.nexus_mixture` builds the result dict; `analysis.nexus_plots` draws it).

Each base optimizer's Nexus arm is compared with it, paired by seed (the same
init; the data order differs, Nexus reads per-source batches). The paper's
claims, as tested here (d_i = Nexus − base for seed i):

- in-distribution loss about equal: |mean d| ≤ tolerance × the base's mean
  validation loss (mean over the sources);
- gradient cosines higher: the mean pairwise cosine of the sources' gradients
  (validation batches, final checkpoint), d > 0;
- source minima closer: the mean pairwise distance between the per-source
  fine-tuned minima, d < 0 (the barrier between them is reported beside it);
- OOD loss lower: the mean loss on the held-out sets, d < 0.

A directional claim "held" when the mean d has the claimed sign in every
seed, "held on average" when the mean does but some seed does not, and "did
not hold" otherwise.
"""

from pathlib import Path

import numpy as np

NEXUS_PREFIX = "nexus_"  # arm "nexus_OPT" is Nexus(OPT)

CLAIMS = {  # name: (metric, +1 if Nexus should be higher, −1 if lower, claim, what is compared)
  "higher_cosine": ("grad_cosine", +1, "gradient cosines higher", "mean pairwise cosine"),
  "closer_minima": (
    "minima_distance",
    -1,
    "source minima closer",
    "mean pairwise distance between the source minima",
  ),
  "lower_ood": ("ood_loss", -1, "OOD loss lower", "mean OOD loss"),
}


def arm_label(arm: str) -> str:
  """ "nexus_adamw" -> "Nexus(AdamW)": an arm's name in tables and plots."""
  names = {"adamw": "AdamW", "muon": "Muon", "lion": "Lion", "lion_k": "Lion-K", "sgd": "SGD"}
  if arm.startswith(NEXUS_PREFIX):
    base = arm[len(NEXUS_PREFIX) :]
    return f"Nexus({names.get(base, base)})"
  return names.get(arm, arm)


def run_metrics(record: dict) -> dict[str, float]:
  """The scalar numbers of one run that the comparisons and tables use."""
  m = record["minima"]
  out = {
    "val_loss": record["val_loss"]["mean"],
    "ood_loss": record["ood_loss"]["mean"],
    "grad_cosine": record["grad_cosine_mean_pairwise"],
    "minima_distance": m["mean_pairwise_distance"],
    "minima_barrier": m["mean_pairwise_barrier"],
    "distance_to_start": m["mean_distance_to_start"],
    "relative_spread": m["relative_spread"],
    "loss_drop": m["mean_loss_drop"],
    "first_order_proxy": float(np.mean(m["first_order_proxy"])),
    "param_norm": record["param_norm"],
    # OOD beyond in-distribution: what "better generalization at the same
    # loss" means when the in-distribution losses are not quite equal.
    "ood_gap": record["ood_loss"]["mean"] - record["val_loss"]["mean"],
  }
  out.update({f"val_loss/{k}": v for k, v in record["val_loss"].items() if k != "mean"})
  out.update({f"ood_loss/{k}": v for k, v in record["ood_loss"].items() if k != "mean"})
  return out


def arm_stats(runs: dict) -> dict[str, dict[str, dict]]:
  """{arm: {metric: {"mean", "std", "values"}}} over the arm's seeds."""
  out = {}
  for arm, seeds in runs.items():
    per_seed = [run_metrics(seeds[s]) for s in sorted(seeds, key=int)]
    out[arm] = {
      k: {
        "mean": float(np.mean([p[k] for p in per_seed])),
        "std": float(np.std([p[k] for p in per_seed])),
        "values": [p[k] for p in per_seed],
      }
      for k in per_seed[0]
    }
  return out


def outcome(diffs, sign: int) -> tuple[str, int]:
  """("held" | "held on average" | "did not hold", seeds with the claimed sign)."""
  diffs = np.asarray(diffs, np.float64)
  n_better = int(np.sum(diffs * sign > 0))
  if np.mean(diffs) * sign <= 0:
    return "did not hold", n_better
  return ("held" if n_better == len(diffs) else "held on average"), n_better


def compare(result: dict, tolerance: float) -> dict[str, dict]:
  """{base arm: the paired comparison of nexus_BASE with BASE} (module docstring)."""
  runs, out = result["runs"], {}
  for base in runs:
    nexus = NEXUS_PREFIX + base
    if base.startswith(NEXUS_PREFIX) or nexus not in runs:
      continue
    seeds = sorted(set(runs[base]) & set(runs[nexus]), key=int)
    if not seeds:
      continue
    b = [run_metrics(runs[base][s]) for s in seeds]
    n = [run_metrics(runs[nexus][s]) for s in seeds]
    metrics = {}
    for k in b[0]:
      d = [y[k] - x[k] for x, y in zip(b, n)]
      metrics[k] = {
        "base": [x[k] for x in b],
        "nexus": [y[k] for y in n],
        "diffs": d,
        "base_mean": float(np.mean([x[k] for x in b])),
        "base_std": float(np.std([x[k] for x in b])),
        "nexus_mean": float(np.mean([y[k] for y in n])),
        "nexus_std": float(np.std([y[k] for y in n])),
        "diff_mean": float(np.mean(d)),
        "diff_std": float(np.std(d)),
      }
    rel = metrics["val_loss"]["diff_mean"] / metrics["val_loss"]["base_mean"]
    claims = {
      "equal_loss": {
        "metric": "val_loss",
        "relative_diff": rel,
        "tolerance": tolerance,
        "outcome": "held" if abs(rel) <= tolerance else "did not hold",
        "text": "in-distribution loss about equal",
      }
    }
    for name, (metric, sign, text, _) in CLAIMS.items():
      result_, n_better = outcome(metrics[metric]["diffs"], sign)
      claims[name] = {
        "metric": metric,
        "outcome": result_,
        "seeds_with_claimed_sign": n_better,
        "text": text,
      }
    out[base] = {"base": base, "nexus": nexus, "seeds": seeds, "metrics": metrics, "claims": claims}
  return out


def _pm(m: dict, side: str, fmt: str = ".3f") -> str:
  return f"{m[side + '_mean']:{fmt}} ± {m[side + '_std']:{fmt}}"


def verdicts(comparisons: dict) -> list[str]:
  """One plain sentence per (base optimizer, claim)."""
  out = []
  for c in comparisons.values():
    who, n = f"{arm_label(c['nexus'])} vs {arm_label(c['base'])}", len(c["seeds"])
    m, cl = c["metrics"], c["claims"]
    e = cl["equal_loss"]
    out.append(
      f"{who} ({n} seed{'s' if n != 1 else ''}): {e['text']}: {e['outcome'].upper()} — "
      "validation loss "
      f"{_pm(m['val_loss'], 'nexus')} vs {_pm(m['val_loss'], 'base')} nats/byte "
      f"({e['relative_diff']:+.1%}; tolerance ±{e['tolerance']:.0%})."
    )
    for name, (key, _, _, phrase) in CLAIMS.items():
      k, metric = cl[name], m[key]
      tail = ""
      if name == "closer_minima":
        tail = (
          f"; barrier between them {_pm(m['minima_barrier'], 'nexus', '.4f')} vs "
          f"{_pm(m['minima_barrier'], 'base', '.4f')}, relative spread "
          f"{m['relative_spread']['nexus_mean']:.3f} vs "
          f"{m['relative_spread']['base_mean']:.3f}"
        )
      if name == "lower_ood":
        tail = (
          f"; OOD − in-distribution gap {_pm(m['ood_gap'], 'nexus')} vs "
          f"{_pm(m['ood_gap'], 'base')} ({outcome(m['ood_gap']['diffs'], -1)[0]} "
          "for a smaller gap)"
        )
        if e["outcome"] != "held":
          tail += "; the in-distribution losses differ too, so this is not at equal loss"
      out.append(
        f"{who}: {k['text']}: {k['outcome'].upper()} ({k['seeds_with_claimed_sign']}/"
        f"{n} seeds) — {phrase} {_pm(metric, 'nexus')} vs {_pm(metric, 'base')}, "
        f"paired difference {metric['diff_mean']:+.3f} ± {metric['diff_std']:.3f}"
        f"{tail}."
      )
  return out


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
  stats = arm_stats(runs)
  arms = list(runs)
  seeds = sorted({s for r in runs.values() for s in r}, key=int)
  lines = [
    "# Nexus on the prose + code + math mixture",
    "",
    f"GPT-2 {config['size']}, {config['steps']} steps of {config['batch']} × "
    f"{config['seq_len']} bytes: every arm reads the same "
    f"{result['token_budget']:,} tokens (Nexus: {config['batch'] // 3} sequences of "
    f"each source per step, k = {config['inner_steps']} inner steps of γ = "
    f"{config['inner_learning_rate']}). Seeds {', '.join(seeds)}; mean ± std over "
    "seeds; a Nexus run and its base run with the same seed share the initialization "
    "(not the data order: Nexus reads per-source batches). "
    f"Runtime {result.get('runtime_s', 0):.0f} s.",
    "",
    "## Verdicts",
    "",
  ]
  lines += [f"- {v}" for v in result["verdicts"]] or ["- No arm has its Nexus counterpart."]
  lines += ["", "## Per arm", ""]
  rows = []
  keys = (
    [k for k in stats[arms[0]] if k.startswith("val_loss")]
    + [k for k in stats[arms[0]] if k.startswith("ood_loss")]
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
    rows.append([k] + [f"{stats[a][k]['mean']:{fmt}} ± {stats[a][k]['std']:{fmt}}" for a in arms])
  lines += _table(["metric"] + [arm_label(a) for a in arms], rows)
  lines += [
    "Rows: validation loss per source and its mean (nats/byte); OOD loss per held-out "
    "set and its mean; ood_gap: OOD − in-distribution mean loss; grad_cosine: the mean "
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
  lines += ["## Paired differences (Nexus − base, per seed)", ""]
  for c in result["comparisons"].values():
    rows = [
      [
        k,
        ", ".join(f"{d:+.4f}" for d in c["metrics"][k]["diffs"]),
        f"{c['metrics'][k]['diff_mean']:+.4f}",
      ]
      for k in (
        "val_loss",
        "ood_loss",
        "ood_gap",
        "grad_cosine",
        "minima_distance",
        "minima_barrier",
        "relative_spread",
      )
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
