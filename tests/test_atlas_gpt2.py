"""The GPT-2 atlas (analysis.atlas_gpt2, analysis.atlas_gpt2_runs): its config
against configs/gpt2.py, the run commands, the choice on validation loss with
diverged runs, the pair sets and the function distance; the command end to end (slow)."""

import json
import math

import numpy as np
import pytest

from analysis import atlas, atlas_gpt2, atlas_gpt2_runs
from configs.atlas import get_config as atlas_config
from configs.gpt2 import _GPT2_LR
from training.errors import UserError

# The optimizers of the project that train GPT-2 (configs/gpt2.py), each in the atlas.
GPT2_OPTIMIZERS = set(_GPT2_LR) - {"sgd"}  # SGD: a baseline with no implicit bias, not an entry


def test_gpt2_entries_cover_every_gpt2_optimizer_and_grids_centre_on_its_rate():
  config = atlas_config("gpt2")
  bases = {atlas_gpt2_runs.parse_optimizer(e.optimizer)[0] for e in config.entries.values()}
  assert bases == GPT2_OPTIMIZERS
  assert {"nexus_adamw", "nexus_muon", "freon_q2_3", "freon_q2"} <= set(config.entries)
  assert list(config.lr_multipliers) == pytest.approx([1 / 3, 1.0, 3.0])
  for name, entry in config.entries.items():
    base, _ = atlas_gpt2_runs.parse_optimizer(entry.optimizer)
    lrs = atlas_gpt2_runs.learning_rates(config, name)
    # The centre: the entry's own rate (Lion-K nuclear/rownorm: Muon's), else configs/gpt2.py's.
    centre = entry.overrides.get("optimizer", {}).get("learning_rate", _GPT2_LR[base])
    assert list(lrs.values()) == pytest.approx(
      [centre * m for m in config.lr_multipliers], rel=1e-5
    )
  assert atlas_gpt2_runs.learning_rates(config, "lion_k_nuclear")[1] == _GPT2_LR["muon"]
  full, local = atlas_config("gpt2,full"), atlas_config("gpt2,runlocal")
  assert len(full.lr_multipliers) > len(config.lr_multipliers) and full.seeds >= 3
  assert config.seeds >= 3 and set(local.entries) < set(config.entries)


def test_train_commands_carry_the_entry_nexus_and_overrides(tmp_path):
  config = atlas_config("gpt2")
  cmds = {
    (e, k): c for (e, k), (_, c, _, _) in atlas_gpt2_runs.grid_commands(config, tmp_path).items()
  }
  assert len(cmds) == len(config.entries) * len(config.lr_multipliers)
  nexus = " ".join(cmds[("nexus_muon", 1)])
  assert "optimizer=muon," in nexus and ",nexus" in nexus and "--config.seed=0" in nexus
  assert "--config.grad_accum_steps=2" in cmds[("crossfit_adamw", 0)]
  assert "--config.optimizer.k=nuclear" in cmds[("lion_k_nuclear", 2)]
  assert ",nexus" not in " ".join(cmds[("adamw", 0)])
  fields = atlas_gpt2_runs.expected_fields(config, "freon_q2_3", 0.02, 2)
  assert fields["optimizer.q"] == pytest.approx(2 / 3) and fields["seed"] == 2


def _fake_run(d, val, vocab=256, diverged=False):
  d.mkdir(parents=True)
  if diverged:
    (d / atlas_gpt2_runs.DIVERGED_FILE).write_text("{}")
    return
  summary = dict(status="finished", final_val_loss_mean=val, vocab_size=vocab)
  summary["final_ood_loss"] = {"mean": val + 0.1}
  (d / "summary.json").write_text(json.dumps(summary))


def test_choice_is_the_lowest_validation_loss_and_never_a_diverged_or_untrained_run(tmp_path):
  config = atlas_config("gpt2,runlocal")
  config.converged_fraction = 0.8  # below 0.8·ln 256 ≈ 4.4 nats
  for k, (val, div) in enumerate(((2.5, False), (1.0, True))):
    _fake_run(atlas_gpt2_runs.run_dir(tmp_path, "adamw", k, 0), val, diverged=div)
  for k, val in enumerate((5.0, 3.0)):  # 5.0: above the threshold, never chosen
    _fake_run(atlas_gpt2_runs.run_dir(tmp_path, "muon", k, 0), val)
  for k, val in enumerate((5.0, 5.5)):
    _fake_run(atlas_gpt2_runs.run_dir(tmp_path, "nexus_adamw", k, 0), val)
  selection = atlas_gpt2_runs.select(config, tmp_path, 256)
  assert selection["adamw"]["chosen"] == 0 and selection["muon"]["chosen"] == 1
  assert selection["nexus_adamw"]["chosen"] is None
  assert math.isnan(selection["adamw"]["sweep"][1]["median_validation_loss"])
  others = atlas_gpt2_runs.seed_commands(config, tmp_path, selection)
  assert set(others) == {("adamw", 1), ("muon", 1)}
  assert others[("muon", 1)][0].name == "muon_lr1_s1"


def test_same_seed_cross_pairs_keep_every_same_entry_pair():
  pairs = atlas_gpt2.cross_pair_indices(3, 3, "same_seed")
  assert len(pairs) == 3 * 3 + 3 * 3  # 3 same-entry pairs per entry, 3 per entry pair
  assert len(atlas_gpt2.cross_pair_indices(3, 3, "all")) == 9 * 8 // 2
  e, s = np.divmod(pairs, 3)
  assert np.all((e[:, 0] == e[:, 1]) | (s[:, 0] == s[:, 1]))


def test_symmetric_kl_is_zero_on_copies_and_symmetric():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 7))
  logits[1] = logits[0] + 2.0  # a shift of the logits: the same distribution
  d = atlas_gpt2.symmetric_kl(logits, np.array([[0, 1], [0, 2], [2, 0]]))
  assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] > 0 and d[1] == pytest.approx(d[2])


def test_bad_cross_pairs_or_geometry_every_is_one_line_before_anything_is_written(tmp_path):
  config = atlas_config("gpt2,runlocal")
  config.cross_pairs = "some"
  with pytest.raises(UserError, match="cross_pairs='some'"):
    atlas.check_config(config, tmp_path)
  assert not (tmp_path / "train").exists()
  config = atlas_config("gpt2,runlocal")
  config.geometry_every = 7
  with pytest.raises(UserError, match="geometry_every=7 is more than num_steps=6"):
    atlas.check_config(config, tmp_path)
  assert not (tmp_path / "train").exists()


@pytest.mark.slow
def test_gpt2_atlas_runlocal_end_to_end_and_rerun_reuses_runs(tmp_path):
  config = atlas_config("gpt2,runlocal")
  result = atlas.run(config, tmp_path)
  saved = json.loads((tmp_path / "atlas.json").read_text())
  assert saved["entries"] == result["entries"] and saved["model"] == "gpt2"
  assert {r["verdict"] for r in saved["hypothesis"].values()} <= {
    "held",
    "did not hold",
    "inconclusive",
  }
  assert set(saved["grad_cosine"]) == set(result["entries"])
  for png in ("barriers", "spectra", "lr_sweep", "ball_vs_barrier"):
    assert (tmp_path / "plots" / f"{png}.png").stat().st_size > 0
  report = (tmp_path / "report.md").read_text()
  assert "atlas on GPT-2" in report and "gradient cosines" in report
  # γ and Φ for the plain optimizers, "not measured" for Nexus (its update needs sources).
  geometry = saved["update_geometry"]
  assert "not_measured" in geometry["nexus_adamw"]
  # At every kept checkpoint (geometry_every = 3 of 6 steps: steps 3 and 6).
  for entry in ("adamw", "muon"):
    assert list(geometry[entry]) == ["3", "6"], geometry[entry]
    assert all(math.isfinite(g["gamma"]["statistic"]) for g in geometry[entry].values())
  assert "Update geometry" in report
  # The barriers' rate against a matmul rate of the same run (XLA's FLOP count of a point).
  t = saved["timings_s"]
  assert t["flops_per_point"] > 0 and 0 < t["fraction_of_matmul_rate"] < 10
  assert "of the f32 matmul rate measured in this run" in report
  again = atlas.run(config, tmp_path)
  assert set(again["trained"].values()) <= {"skipped", "diverged"}
