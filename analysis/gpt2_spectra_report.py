"""analysis.gpt2_spectra's verdicts and report: how each statistic departs
from its endpoints along a path, the worst case per pair kind, the PNGs (loss
and spectra along the paths, per pair kind), report.md and the one-line
verdicts."""

from pathlib import Path

import numpy as np

from analysis import stats
from analysis.plots import new_figure, palette, save_figure
from analysis.spectra import STAT_NAMES

# The matrix kinds the paths' spectra are grouped by (gpt2_spectra.layer_type).
LAYER_TYPES = {
  "c_attn": "attn/c_attn",
  "attn_c_proj": "attn/c_proj",
  "c_fc": "mlp/c_fc",
  "mlp_c_proj": "mlp/c_proj",
}


def deviation_metrics(s_T: np.ndarray, ts: np.ndarray, tolerance: float) -> dict:
  """How s(t) departs from its endpoints (the definitions: analysis.gpt2_spectra's
  docstring, "Verdicts")."""
  s_T, ts = np.asarray(s_T, np.float64), np.asarray(ts, np.float64)
  s0, s1 = s_T[0], s_T[-1]
  lin = (1 - ts) * s0 + ts * s1
  rel_lin = float(np.max(np.abs(s_T - lin) / np.maximum(np.abs(lin), 1e-12)))
  low = min(s0, s1)
  drop = float(max(0.0, (low - s_T.min()) / max(abs(low), 1e-12)))
  scale = max(abs(s1 - s0), 1e-3 * abs(s0), 1e-12)
  direction = np.sign(s1 - s0) or 1.0
  steps = np.diff(s_T) * direction
  against = float(max(0.0, -steps.min()) / scale) if steps.size else 0.0
  overshoot = float(max(0.0, s_T.max() - max(s0, s1), low - s_T.min()) / scale)
  return {
    "start": float(s0),
    "end": float(s1),
    "min": float(s_T.min()),
    "max": float(s_T.max()),
    "max_rel_dev_from_interp": rel_lin,
    "max_rel_drop_below_endpoints": drop,
    "max_step_against_direction": against,
    "overshoot": overshoot,
    "monotone": against <= tolerance,
    "spike": overshoot > 0.1,
  }


# summarize's worst cases: {summary key: deviation_metrics key}.
WORST_CASES = {
  "max_rel_dev_from_interp": "max_rel_dev_from_interp",
  "max_rel_drop_below_endpoints": "max_rel_drop_below_endpoints",
  "max_step_against_direction": "max_step_against_direction",
  "max_overshoot": "overshoot",
}


def summarize(pairs_out: list[dict], tolerance: float) -> dict:
  """Per pair kind (same/cross/self) and statistic: the worst case over pairs
  and matrices, and how many curves were monotone or spiked (``tolerance``
  was applied by deviation_metrics)."""
  del tolerance
  groups = {}
  for p in pairs_out:
    g = groups.setdefault(p["kind"].split(":")[0], {})
    for stat in STAT_NAMES:
      ms = [m[stat] for m in p["matrices"].values()]
      e = g.setdefault(
        stat,
        dict.fromkeys(WORST_CASES, 0.0) | {"num_monotone": 0, "num_spikes": 0, "num_curves": 0},
      )
      for key, metric in WORST_CASES.items():
        e[key] = max(e[key], *(m[metric] for m in ms))
      e["num_monotone"] += sum(m["monotone"] for m in ms)
      e["num_spikes"] += sum(m["spike"] for m in ms)
      e["num_curves"] += len(ms)
    g["max_loss_barrier"] = max(g.get("max_loss_barrier", 0.0), p["loss_barrier"])
  return groups


def write_plots(result: dict, out: Path, prefix: str = "") -> list[Path]:
  ts = np.asarray(result["ts"])
  kinds = sorted({p["kind"] for p in result["pairs"]})
  colors = dict(zip(kinds, palette(len(kinds))))
  fig, ax = new_figure(1, 1, (5, 3.5))
  seen = set()
  for p in result["pairs"]:
    ax.plot(
      ts,
      p["loss"],
      color=colors[p["kind"]],
      marker=".",
      label=None if p["kind"] in seen else p["kind"],
    )
    seen.add(p["kind"])
  ax.set(xlabel="t", ylabel="validation loss (nats/token)", title="loss along linear paths")
  ax.legend(fontsize=7)
  paths = [save_figure(fig, out / f"{prefix}loss_along_path.png", dpi=100)]
  for stat in STAT_NAMES:
    fig, axes = new_figure(1, len(LAYER_TYPES), (4 * len(LAYER_TYPES), 3.3))
    for ax, ltype in zip(axes, LAYER_TYPES):
      seen = set()
      for p in result["pairs"]:
        curves = [m[stat]["values"] for m in p["matrices"].values() if m["layer_type"] == ltype]
        ax.plot(
          ts,
          np.mean(curves, axis=0),
          color=colors[p["kind"]],
          marker=".",
          label=None if p["kind"] in seen else p["kind"],
        )
        seen.add(p["kind"])
      ax.set(xlabel="t", title=f"{ltype} (mean over layers)", ylabel=stat)
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, out / f"{prefix}spectra_{stat}.png", dpi=100))
  return paths


def render_report(result: dict, runtime_s: float, plots: list[Path]) -> str:
  """report.md: the interval verdicts (one sentence each), then each protocol's tables."""
  config = result["config"]
  lines = [
    "# GPT-2 spectra along linear paths",
    "",
    f"Protocols {config['protocols']}; {config['size']}, {config['steps']} steps, optimizers "
    f"{config['optimizers']}, seeds {config['seeds']}; runtime {runtime_s:.0f} s "
    f"(training {result['train_s']:.0f} s).",
    "",
    "## Verdicts (95% cluster-bootstrap intervals over seeds)",
    "",
    f"Declared before the run: spectrum preserved when max_t |s(t) − s_lin(t)| ≤ "
    f"{config['preserve_tolerance']} × the spread (std over seeds) of s at the optimizer's "
    f"endpoints (worst matrix and statistic of a pair); cross paths smooth when the overshoot "
    f"outside the endpoints ≤ {config['spike_tolerance']} × |end − start|; barrier ≈ 0 when "
    f"≤ {config['barrier_tolerance']} nats.",
    "",
    *(f"- {stats.describe(v)}{_why(v)}" for v in result["verdicts"]),
    "",
  ]
  for protocol, out in result["protocols"].items():
    lines += [f"# Protocol {protocol}", ""] + _protocol_section(out, config)
  lines += ["Plots: " + ", ".join(f"`{p.name}`" for p in plots), ""]
  return "\n".join(lines)


def _why(record: dict) -> str:
  """Why a verdict is inconclusive when no interval could be computed."""
  if record["n_seeds"] < stats.MIN_SEEDS:
    return f" Inconclusive: {record['n_seeds']} seeds give no interval (need {stats.MIN_SEEDS})."
  return ""


def _protocol_section(result: dict, config: dict) -> list[str]:
  s, tol = result["summary"], config["monotone_tolerance"]
  lines = [
    f"Runs ({config['size']}, {config['steps']} steps): "
    + ", ".join(
      f"{n} val loss {r['final_val_loss']['mean']:.3f}" for n, r in result["runs"].items()
    )
    + ".",
    "",
    f"{len(result['ts'])} points on t ∈ [0, 1].",
    "",
  ]
  for group in ("same", "cross", "cross_shared_init", "self"):
    if group not in s:
      continue
    lines += [
      f"## {group} pairs",
      "",
      "| statistic | max rel. dev. from endpoint interp. | max rel. drop below endpoints "
      "| max step against direction | max overshoot | monotone | spikes |",
      "|---|---|---|---|---|---|---|",
    ]
    for stat in STAT_NAMES:
      e = s[group][stat]
      lines.append(
        f"| {stat} | {e['max_rel_dev_from_interp']:.3f} | "
        f"{e['max_rel_drop_below_endpoints']:.3f} | "
        f"{e['max_step_against_direction']:.3f} | {e['max_overshoot']:.3f} | "
        f"{e['num_monotone']}/{e['num_curves']} | {e['num_spikes']} |"
      )
    lines += [
      "",
      f"Max loss barrier (above the endpoints' interpolation): "
      f"{s[group]['max_loss_barrier']:.4f} nats.",
      "",
    ]
  lines += ["## Worst cases (no interval)", ""]
  for v in result["verdicts"]:
    lines.append(f"- {v}")
  lines += [
    "",
    f"Monotone: no step against the overall direction larger than {tol} × |end − start|; "
    "spike: overshoot outside the endpoints' range > 0.1 × |end − start|.",
    "",
  ]
  return lines


def verdicts(result: dict) -> list[str]:
  s, out = result["summary"], []
  if "same" in s:
    e = {stat: s["same"][stat] for stat in STAT_NAMES}
    kept = all(e[k]["max_rel_dev_from_interp"] <= 0.1 for k in ("sigma_max", "stable_rank"))
    out.append(
      f"Same-optimizer paths {'preserved' if kept else 'did NOT preserve'} the spectra "
      f"(threshold 10%): stable rank deviated from the endpoints' interpolation by at most "
      f"{e['stable_rank']['max_rel_dev_from_interp']:.1%}, σ_max by at most "
      f"{e['sigma_max']['max_rel_dev_from_interp']:.1%} (largest drop of σ_max below the "
      f"smaller endpoint: {e['sigma_max']['max_rel_drop_below_endpoints']:.1%}), effective "
      f"rank by {e['effective_rank']['max_rel_dev_from_interp']:.1%}."
    )
  for group in ("cross", "cross_shared_init"):
    if group not in s:
      continue
    e = {stat: s[group][stat] for stat in STAT_NAMES}
    mono = sum(e[k]["num_monotone"] for k in STAT_NAMES)
    total = sum(e[k]["num_curves"] for k in STAT_NAMES)
    spikes = sum(e[k]["num_spikes"] for k in STAT_NAMES)
    smooth = mono >= 0.9 * total and spikes == 0
    max_over = lambda key, e=e: max(e[k][key] for k in STAT_NAMES)
    which = "different seeds" if group == "cross" else "the same seed: shared init and data order"
    out.append(
      f"Cross-optimizer paths ({which}) "
      f"{'transitioned smoothly' if smooth else 'did NOT transition smoothly'}"
      f": {mono}/{total} statistic curves monotone (near-monotone), {spikes} spikes; "
      f"largest step against the direction {max_over('max_step_against_direction'):.3f}"
      f" and largest overshoot {max_over('max_overshoot'):.3f} "
      "(× |end − start|)."
    )
  if "self" in s:
    dev = max(s["self"][k]["max_rel_dev_from_interp"] for k in STAT_NAMES)
    out.append(f"Control (a run to itself): spectra constant up to {dev:.1e} relative.")
  return out
