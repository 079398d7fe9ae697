"""The Nexus mixture experiment's paired comparisons and verdicts (analysis.stats).

Comparisons, each paired by seed (the same init; Nexus reads per-source
batches, so not the same data order), d_i = arm − reference for seed i:

- "nexus_vs_base": nexus_OPT against OPT, the paper's claims;
- "nexus_vs_control": nexus_OPT against nexuscontrol_OPT (the same
  pseudo-gradient norm, no alignment pressure): does a gain come from the
  alignment rather than from the step's size?
- "control_vs_base": the control against OPT (what the step's size alone does);
- "grid": each γ × k grid point against OPT (the in-distribution change
  against the OOD change, so "equal loss" is read off a curve).

Claims (CLAIMS): in-distribution loss about equal (the statistic |mean d| /
mean reference loss, held when its interval lies below the tolerance),
gradient cosines higher, source minima closer, OOD loss lower, exact match
higher (per prompt). Each verdict comes from a seed-resampled 95% interval of
the mean paired difference (analysis.stats.bootstrap, paired_difference):
held only when the interval excludes the null on the claimed side, did not
hold when it excludes it on the other, inconclusive otherwise or with fewer
than analysis.stats.MIN_SEEDS seeds.
"""

import numpy as np

from analysis import stats

# name: (metric, direction of the claim for arm − reference, text)
CLAIMS = {
  "higher_cosine": ("grad_cosine", "greater", "gradient cosines higher"),
  "closer_minima": ("minima_distance", "less", "source minima closer"),
  "lower_ood": ("ood_loss", "less", "OOD loss lower"),
}
EXACT_MATCH_PREFIX = "exact_match/"
KINDS = ("nexus_vs_base", "nexus_vs_control", "control_vs_base", "grid")


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
  for prompt, em in record.get("exact_match", {}).items():
    out[EXACT_MATCH_PREFIX + prompt] = em["accuracy"]
  out.update({f"val_loss/{k}": v for k, v in record["val_loss"].items() if k != "mean"})
  out.update({f"ood_loss/{k}": v for k, v in record["ood_loss"].items() if k != "mean"})
  return out


def pairs(arms: dict) -> list[tuple[str, str, str]]:
  """[(kind, arm, reference)] of every comparison the arm table allows (module docstring)."""
  by_key = {(a["optimizer"], a["kind"], a["grid"]): name for name, a in arms.items()}
  out = []
  for name, a in arms.items():
    base = by_key.get((a["optimizer"], "base", False))
    if a["kind"] == "nexus" and not a["grid"]:
      if base:
        out.append(("nexus_vs_base", name, base))
      control = by_key.get((a["optimizer"], "control", False))
      if control:
        out.append(("nexus_vs_control", name, control))
    elif a["kind"] == "control" and base:
      out.append(("control_vs_base", name, base))
    elif a["grid"] and base:
      out.append(("grid", name, base))
  return out


def _metric_table(ref: list[dict], arm: list[dict], key: str) -> dict:
  r = np.array([x.get(key, np.nan) for x in ref], np.float64)
  a = np.array([y.get(key, np.nan) for y in arm], np.float64)
  d = a - r
  return {
    "base": r.tolist(),
    "nexus": a.tolist(),
    "diffs": d.tolist(),
    "base_mean": float(np.nanmean(r)),
    "base_std": float(np.nanstd(r)),
    "nexus_mean": float(np.nanmean(a)),
    "nexus_std": float(np.nanstd(a)),
    "diff_mean": float(np.nanmean(d)),
    "diff_std": float(np.nanstd(d)),
  }


def relative_abs_difference(arm_S, ref_S):
  """|mean(arm − ref)| / mean(ref) over a seed resample: the equal-loss statistic."""
  a, r = np.asarray(arm_S, np.float64), np.asarray(ref_S, np.float64)

  def statistic(idx):
    ok = np.isfinite(a[idx]) & np.isfinite(r[idx])
    if not ok.any():
      return float("nan")
    return float(abs(np.mean(a[idx][ok] - r[idx][ok])) / np.mean(r[idx][ok]))

  return statistic


def _record(claim, text, stat, table, null, direction, n_total, condition, n_resamples, **extra):
  """analysis.stats.verdict_record of one claim; ``table`` is its _metric_table."""
  finite = np.isfinite(np.asarray(table["diffs"], np.float64))
  used = int(finite.sum())
  interval = stats.bootstrap(stat, len(table["diffs"]), n_resamples)
  return stats.verdict_record(
    text,
    interval,
    null,
    direction,
    n_seeds=len(table["diffs"]),
    n_pairs_used=used,
    n_pairs_excluded=n_total - used,
    condition=condition,
    width=None,
    min_pairs=stats.MIN_SEEDS,
    name=claim,
    **extra,
  )


def _condition(config: dict, arm: dict) -> str:
  text = (
    f"GPT-2 {config['size']}, {config['steps']} steps × {config['batch']} × "
    f"{config['seq_len']} tokens"
  )
  if arm["kind"] != "base":
    text += f", γ = {arm['inner_learning_rate']:g}, k = {arm['inner_steps']}"
  if arm["kind"] == "control":
    text += f", control {arm['control']}"
  return text


def compare_pair(result: dict, kind: str, arm: str, reference: str) -> dict | None:
  """One comparison (module docstring): per-metric paired tables and claim records."""
  runs, config = result["runs"], result["config"]
  if arm not in runs or reference not in runs:
    return None
  all_seeds = set(runs[arm]) | set(runs[reference])
  seeds = sorted(set(runs[arm]) & set(runs[reference]), key=int)
  if not seeds:
    return None
  ref = [run_metrics(runs[reference][s]) for s in seeds]
  new = [run_metrics(runs[arm][s]) for s in seeds]
  # The metrics both arms have (exact match: only runs measured with it).
  metrics = {k: _metric_table(ref, new, k) for k in ref[0] if k in new[0]}
  n_resamples = config.get("n_resamples", 2000)
  who = f"{arm} vs {reference}"
  cond = _condition(config, result["arms"][arm])
  common = dict(n_total=len(all_seeds), condition=cond, n_resamples=n_resamples)
  tol = config["equal_loss_tolerance"]
  v = metrics["val_loss"]
  claims = {
    "equal_loss": _record(
      "equal_loss",
      f"{who}: in-distribution loss about equal (|Δ|/loss < {tol:g})",
      relative_abs_difference(v["nexus"], v["base"]),
      v,
      tol,
      "less",
      metric="val_loss",
      comparison=kind,
      arm=arm,
      reference=reference,
      **common,
    )
  }
  named = dict(CLAIMS)
  for key in metrics:
    if key.startswith(EXACT_MATCH_PREFIX):
      prompt = key[len(EXACT_MATCH_PREFIX) :]
      named[f"higher_exact_match_{prompt}"] = (key, "greater", f"exact match ({prompt}) higher")
  for name, (key, direction, text) in named.items():
    m = metrics[key]
    claims[name] = _record(
      name,
      f"{who}: {text}",
      stats.paired_difference(m["nexus"], m["base"]),
      m,
      0.0,
      direction,
      metric=key,
      comparison=kind,
      arm=arm,
      reference=reference,
      **common,
    )
  # The mean paired changes with their intervals: the γ × k curve's coordinates.
  changes = {
    k: stats.bootstrap(
      stats.paired_difference(metrics[k]["nexus"], metrics[k]["base"]), len(seeds), n_resamples
    )
    for k in ("val_loss", "ood_loss")
  }
  return {
    "kind": kind,
    "nexus": arm,
    "base": reference,
    "seeds": seeds,
    "metrics": metrics,
    "changes": changes,
    "claims": claims,
  }


def compare(result: dict) -> dict[str, dict]:
  """{"ARM-vs-REFERENCE": comparison} for every pair the arms allow."""
  out = {}
  for kind, arm, reference in pairs(result["arms"]):
    c = compare_pair(result, kind, arm, reference)
    if c is not None:
      out[f"{arm}-vs-{reference}"] = c
  return out


def verdict_records(comparisons: dict) -> list[dict]:
  """Every claim record of every comparison (nexus.json's "verdicts")."""
  return [r for c in comparisons.values() for r in c["claims"].values()]
