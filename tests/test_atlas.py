"""The atlas on planted cases with known answers (analysis.atlas_maps,
analysis.atlas.ball_of, analysis.atlas_runs.choose), and the command end to end."""

import json

import jax
import ml_collections
import numpy as np
import optax
import pytest

from analysis import alignment, atlas, atlas_maps, atlas_runs, constraint_demo
from configs.atlas import get_config as atlas_config
from configs.relu2 import get_config
from optimizers import lion
from training import tasks
from training.errors import UserError


def _task_and_inits(num_seeds: int):
  config = get_config("width=16,runlocal")
  config.model.width = 16
  task = tasks.relu2_task(config)
  keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
  init = jax.vmap(lambda k: task.model.init(k, task.train[0][:1])["params"])
  return task, init(keys)


def _trained(task, params_S, steps: int = 300):
  """Each seed trained with Adam, full batch: solutions between which barriers exist."""
  tx = optax.adam(0.02)
  loss = lambda p: task.metric(p, task.train)["loss"]

  def one(p):
    def body(carry, _):
      p, state = carry
      updates, state = tx.update(jax.grad(loss)(p), state, p)
      return (optax.apply_updates(p, updates), state), None

    return jax.lax.scan(body, (p, tx.init(p)), None, length=steps)[0][0]

  return jax.jit(jax.vmap(one))(params_S)


def _permuted(params_S, seed: int):
  """Every seed's hidden units permuted at random: the same functions."""
  spec = alignment.relu2_permutation_spec(jax.tree.map(lambda x: x[0], params_S))
  rng = np.random.default_rng(seed)
  out = []
  for s in range(jax.tree.leaves(params_S)[0].shape[0]):
    one = jax.tree.map(lambda x, s=s: x[s], params_S)
    perms = {p: rng.permutation(one["hidden"]["kernel"].shape[1]) for p in spec.perm_to_axes}
    out.append(alignment.apply_permutation(spec, perms, one))
  return jax.tree.map(lambda *xs: np.stack(xs), *out)


def test_copies_and_permuted_copies_are_one_region_with_zero_cross_barrier():
  """Entries: A, a copy of A under another name, and A with its hidden units
  permuted. Every cross pair at the same seed has barrier 0 after alignment and
  function distance 0; every entry's excess barrier over the others is 0; one region."""
  S = 3
  task, params_S = _task_and_inits(S)
  params_S = _trained(task, params_S)
  params_N = atlas_maps.stack_params([params_S, params_S, _permuted(params_S, 1)])
  pairs = atlas_maps.index_pairs(3, S)
  ts = np.linspace(0, 1, 5, dtype=np.float32)
  heights = atlas_maps.aligned_barriers(task.metric, params_N, pairs, ts, task.train)
  tables = atlas_maps.pair_tables(heights, pairs, 3, S, np.ones(3 * S, bool))
  for e, f in ((0, 1), (0, 2), (1, 2)):
    np.testing.assert_allclose(np.diag(tables[(e, f)]), 0.0, atol=1e-6)
  upper = np.triu_indices(S, 1)  # (A_s, copy of A_s'), s < s': the pair (A_s, A_s') itself
  np.testing.assert_allclose(tables[(0, 1)][upper], tables[(0, 0)][upper], atol=1e-6)
  assert np.nanmax(tables[(0, 0)]) > 1e-4  # different seeds' solutions are apart: a real test
  matrix = atlas_maps.matrix_with_intervals(tables, 3, S, n_resamples=50)
  excess = atlas_maps.excess_barrier(matrix["median"])
  np.testing.assert_allclose(excess, 0.0, atol=1e-6)
  labels, _ = atlas_maps.regions(excess, threshold=1e-3)
  assert len(set(labels)) == 1
  apply = lambda p, x: task.model.apply({"params": p}, x)
  fdist = atlas_maps.function_distances(apply, params_N, pairs, task.test[0])
  fd = atlas_maps.pair_tables(fdist, pairs, 3, S, np.ones(3 * S, bool))
  np.testing.assert_allclose(np.diag(fd[(0, 2)]), 0.0, atol=1e-5)


def test_regions_separate_two_planted_groups_and_nan_is_far():
  d = np.array(
    [
      [0.0, 0.001, 0.5, 0.6],
      [0.001, 0.0, 0.55, 0.5],
      [0.5, 0.55, 0.0, 0.002],
      [0.6, 0.5, 0.002, 0.0],
    ]
  )
  labels, _ = atlas_maps.regions(d, threshold=0.01)
  assert labels[0] == labels[1] != labels[2] == labels[3]
  d[0, 1] = d[1, 0] = np.nan
  labels, _ = atlas_maps.regions(d, threshold=0.01)
  assert labels[0] != labels[1]


def test_excluded_seeds_are_nan_in_every_table_and_counted():
  S = 3
  pairs = atlas_maps.index_pairs(2, S)
  valid = np.ones(2 * S, bool)
  valid[4] = False  # entry 1, seed 1 did not converge
  tables = atlas_maps.pair_tables(np.ones(len(pairs)), pairs, 2, S, valid)
  assert np.isnan(tables[(0, 1)][:, 1]).all() and np.isnan(tables[(1, 1)][1]).all()
  matrix = atlas_maps.matrix_with_intervals(tables, 2, S, n_resamples=20)
  assert matrix["n_pairs"][0, 0] == 3 and matrix["n_pairs"][1, 1] == 1
  assert matrix["n_pairs"][0, 1] == 6


def test_ball_membership_of_lion_at_two_weight_decays():
  """Lion converges to λ·‖W‖∞ = 1 when the unconstrained minimum lies outside the
  ball. With λ = 0.5 and 1: each solution sits on its own ball (1), the λ = 0.5
  solution is at 2 in the λ = 1 ball (outside), the λ = 1 one at 0.5 in the other."""
  x, y, _ = constraint_demo.make_problem(0)
  solutions, fns = [], []
  for lam in (0.5, 1.0):
    w, _ = constraint_demo.train(
      lion(optax.cosine_decay_schedule(0.01, 2000), weight_decay=lam), x, y, 2000
    )
    solutions.append(w)
    kind, fn = atlas.ball_of({"name": "lion", "weight_decay": lam}, w)
    assert kind == "ball"
    fns.append(fn)
  params_N = jax.tree.map(lambda *xs: np.stack(xs), *solutions)
  values = atlas_maps.ball_values(fns, params_N)
  membership = atlas_maps.membership_matrix(values, 2, 1, np.ones(2, bool))
  np.testing.assert_allclose(membership, [[1.0, 2.0], [0.5, 1.0]], rtol=0.02)


def test_ball_kind_is_the_weakest_over_the_matrices():
  task, params_S = _task_and_inits(1)
  one = jax.tree.map(lambda x: x[0], params_S)
  cases = {
    "adamw": "ball",
    "muon": "ball",
    "polargrad": "penalty",
    "kaon": "none",
  }
  for name, expected in cases.items():
    section = get_config(f"optimizer={name},runlocal").optimizer
    section.weight_decay = 0.1
    if "adam_weight_decay" in section:
      section.adam_weight_decay = 0.1
    kind, fn = atlas.ball_of(section, one)
    assert kind == expected, name
    assert (fn is None) == (expected == "none")
  freon = get_config("optimizer=freon,runlocal").optimizer
  freon.weight_decay, freon.adam_weight_decay = 0.1, 0.1
  assert atlas.ball_of(freon, one)[0] == "none"  # q = 2/3 < 1: no known ball
  freon.q = 2.0
  assert atlas.ball_of(freon, one)[0] == "ball"  # q ≥ 1: Lion-K with a Schatten K


def test_learning_rate_is_chosen_on_validation_never_on_train():
  sweep = [
    {
      "k": 0,
      "learning_rate": 0.1,
      "run_dir": "a",
      "median_validation_loss": 0.3,
      "train_loss": [0.0],
    },
    {
      "k": 1,
      "learning_rate": 0.3,
      "run_dir": "b",
      "median_validation_loss": 0.2,
      "train_loss": [0.5],
    },
    {"k": 2, "learning_rate": 1.0, "run_dir": "c", "median_validation_loss": float("nan")},
  ]
  assert atlas_runs.choose(sweep) == {"chosen": 1, "learning_rate": 0.3, "run_dir": "b"}
  nothing = [dict(sweep[2])]
  assert atlas_runs.choose(nothing)["chosen"] is None


def test_barrier_timings_closed_form():
  """2,000 points of 3 GFLOP in 4 s against a 500 GFLOP/s matmul: 2 s per 1,000 points,
  1.5 TFLOP/s, i.e. 3× the matmul rate (an impossible share, so a wrong formula shows)."""
  t = atlas_maps.barrier_timings(4.0, 2000, 3e9, 5e11)
  assert t["path_points"] == 2000 and t["barriers"] == 4.0
  assert t["seconds_per_1000_points"] == pytest.approx(2.0)
  assert t["fraction_of_matmul_rate"] == pytest.approx(3.0)


def test_config_errors_are_one_line(tmp_path):
  config = atlas_config("runlocal")
  config.entries.adamw.optimizer = "adamz"
  with pytest.raises(Exception, match="unknown optimizer 'adamz'"):
    atlas.check_config(config, tmp_path)
  assert not (tmp_path / "train").exists()
  # A bool is an int in Python; True is not a count of grid points.
  for bad in (True, -1, 1.5):
    config = ml_collections.ConfigDict({"lr_multipliers": [0.5, 1.0], "grid_extensions": bad})
    with pytest.raises(UserError, match="grid_extensions="):
      atlas_runs.check_grid(config)


@pytest.mark.slow
def test_atlas_runlocal_end_to_end_and_rerun_reuses_runs(tmp_path):
  config = atlas_config("runlocal")
  result = atlas.run(config, tmp_path)
  saved = json.loads((tmp_path / "atlas.json").read_text())
  assert saved["entries"] == result["entries"]
  assert {r["verdict"] for r in saved["hypothesis"].values()} <= {
    "held",
    "did not hold",
    "inconclusive",
  }
  for png in ("barriers", "membership", "spectra", "lr_sweep", "ball_vs_barrier"):
    assert (tmp_path / "plots" / f"{png}.png").stat().st_size > 0
  report = (tmp_path / "report.md").read_text()
  assert "Learning-rate sweeps" in report and report.count("| adamw |") >= 2
  # γ and Φ at every kept checkpoint of every chosen entry, with intervals.
  for entry in saved["entries"]:
    steps = saved["update_geometry"][entry]
    assert steps and all(np.isfinite(g["gamma"]["statistic"]) for g in steps.values())
  assert "Update geometry" in report
  # The barrier rate against the same run's matmul rate, in atlas.json and the report.
  t = saved["timings_s"]
  assert t["flops_per_point"] > 0 and 0 < t["fraction_of_matmul_rate"] < 10
  assert "of the f32 matmul rate measured in this run" in report
  again = atlas.run(config, tmp_path)
  assert set(again["trained"].values()) == {"skipped"}


@pytest.mark.slow
def test_atlas_trains_an_extension_run_when_the_choice_is_at_the_grid_edge(tmp_path):
  """End to end: rates so small that 60 steps barely move the loss make the largest the
  best, so each entry's grid grows by one trained rate above it (k = 3, one outermost grid
  ratio further), and a choice still at the new edge is flagged in the report."""
  config = atlas_config("runlocal")
  config.lr_multipliers, config.grid_extensions = [1e-3, 3e-3, 1e-2], 1
  result = atlas.run(config, tmp_path)
  for entry in result["entries"]:
    assert tuple(result["grid_extensions"][entry]) == (0, 1)
    assert (tmp_path / "train" / f"{entry}_lr3").is_dir()
    item = result["selection"][entry]
    rates = [p["learning_rate"] for p in item["sweep"]]
    # One outermost grid ratio (1e-2 / 3e-3) beyond the old top rate.
    assert len(rates) == 4 and rates[-1] == pytest.approx(rates[-2] ** 2 / rates[-3], rel=1e-5)
    assert item["chosen"] == 3
  report = (tmp_path / "report.md").read_text()
  assert "Chosen at the edge of the grid after its extensions" in report
  assert report.count(" + |") == len(result["entries"])  # the extension points are marked


def test_a_choice_at_the_grid_edge_is_flagged_as_possibly_under_tuned():
  def item(chosen, rates=(0.1, 0.3, 1.0)):
    sweep = [{"k": k, "learning_rate": r} for k, r in enumerate(rates)]
    return {"chosen": chosen, "sweep": sweep}

  selection = {
    "low": item(0),
    "mid": item(1),
    "high": item(2),
    "none": item(None),
    "two": item(1, (0.1, 0.3)),
    "unsorted": item(0, (1.0, 0.1, 0.3)),
  }
  assert atlas_runs.edge_entries(selection) == [
    ("low", "lowest"),
    ("high", "highest"),
    ("unsorted", "highest"),
  ]


def test_grid_extensions_continue_the_grid_geometrically_on_each_side():
  config = atlas_config()
  config.lr_multipliers = [1 / 3, 1.0, 3.0]
  assert atlas_runs.grid_multipliers(config, (2, 1)) == pytest.approx(
    {-2: 1 / 27, -1: 1 / 9, 0: 1 / 3, 1: 1.0, 2: 3.0, 3: 9.0}
  )
  config.lr_multipliers = [1.0, 0.5, 4.0]  # unsorted, uneven: each side's own outer ratio
  assert atlas_runs.grid_multipliers(config, (1, 1)) == pytest.approx(
    {0: 1.0, 1: 0.5, 2: 4.0, -1: 0.25, 3: 16.0}
  )


def _planted_extension(limit: int, best: dict, diverged=frozenset()):
  """extend_grid on entries whose validation loss is (log m − log best)²: the
  selection it ends with and the grids it asked to train, in order."""
  config = atlas_config()
  config.lr_multipliers, config.grid_extensions = [1 / 3, 1.0, 3.0], limit
  config.entries = {e: config.entries.adamw.to_dict() for e in best}
  asked = []

  def select(extended):
    out = {}
    for e in best:
      grid = atlas_runs.grid_multipliers(config, extended[e])
      sweep = [
        {
          "k": k,
          "learning_rate": m,
          "median_validation_loss": np.nan if m in diverged else np.log(m / best[e]) ** 2,
          "run_dir": f"{e}{k}",
        }
        for k, m in sorted(grid.items(), key=lambda kv: kv[1])
      ]
      out[e] = {"sweep": sweep, **atlas_runs.choose(sweep)}
    return out

  def train(extended):
    asked.append(dict(extended))
    return {}

  _, extended, selection = atlas_runs.extend_grid(config, train, select)
  return extended, selection, asked


def test_extend_grid_follows_the_choice_past_the_edge_until_it_is_interior():
  extended, sel, asked = _planted_extension(2, {"up": 9.0, "down": 1 / 9, "mid": 1.0})
  # 9 (1/9) is found one point out; the next point out shows it interior.
  assert extended == {"up": (0, 2), "down": (2, 0), "mid": (0, 0)}
  assert sel["up"]["learning_rate"] == pytest.approx(9.0)
  assert sel["down"]["learning_rate"] == pytest.approx(1 / 9)
  # Past the last extension the choice is still an edge one.
  extended, sel, asked = _planted_extension(2, {"far": 20.0})
  assert extended == {"far": (0, 2)} and sel["far"]["learning_rate"] == pytest.approx(27.0)
  assert atlas_runs.edge_entries(sel) == [("far", "highest")]  # still an edge: the report says so
  assert asked == [{"far": (0, 0)}, {"far": (0, 1)}, {"far": (0, 2)}]
  # A rate beyond the edge that diverges ends the growth; the choice stays where it was.
  extended, sel, _ = _planted_extension(2, {"up": 100.0}, diverged={9.0})
  assert extended == {"up": (0, 1)} and sel["up"]["learning_rate"] == pytest.approx(3.0)
  assert atlas_runs.edge_entries(sel) == []
  extended, _, asked = _planted_extension(0, {"up": 100.0})
  assert extended == {"up": (0, 0)} and len(asked) == 1
