"""Every plot writes a readable PNG from the analysis functions' outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.image import imread

from analysis import barriers, constraints, evaluate, plots, spectra


def _png_ok(path):
  image = imread(path)
  assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
  assert image[..., :3].std() > 0.05  # Not a blank canvas.


def test_path_losses_and_barrier_matrix(tmp_path):
  ts = np.linspace(0, 1, 21)
  losses = np.stack([np.sin(np.pi * ts) * h for h in (0.5, 1.0, 2.0)])
  _png_ok(
    plots.plot_path_losses(
      ts, losses, tmp_path / "loss.png", labels=["a", "b", "c"], test_losses_PxT=losses + 0.1
    )
  )
  pairs = evaluate.all_pairs(6)
  values = barriers.loss_barrier(np.sin(np.pi * ts)[None] * np.arange(1, 16)[:, None], ts).height
  matrix = barriers.barrier_matrix(values, pairs, 6)
  _png_ok(plots.plot_barrier_matrix(matrix, ["muon", "adamw"] * 3, tmp_path / "barriers.png"))
  with pytest.raises(ValueError, match="points per path"):
    plots.plot_path_losses(ts[:5], losses, tmp_path / "bad.png")
  with pytest.raises(ValueError, match="N group names"):
    plots.plot_barrier_matrix(matrix, ["muon"], tmp_path / "bad.png")


def test_constraints_and_spectra_along_path(tmp_path):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  a = {"hidden": {"kernel": jax.random.normal(k1, (6, 8))}, "head": {"kernel": jnp.ones((8, 1))}}
  b = {"hidden": {"kernel": jax.random.normal(k2, (6, 8))}, "head": {"kernel": -jnp.ones((8, 1))}}
  ts = jnp.linspace(0, 1, 17)
  values = constraints.constraints_along_path("linear", a, b, ts, "nuclear", 0.3)
  named = {"hidden/kernel": values["hidden"]["kernel"], "head/kernel": values["head"]["kernel"]}
  _png_ok(plots.plot_constraints_along_path(ts, named, tmp_path / "constraints.png"))
  stats = spectra.spectra_along_paths(
    "linear",
    jax.tree.map(lambda x: jnp.stack([x, 2 * x]), a),
    jax.tree.map(lambda x: jnp.stack([x, x]), b),
    ts,
  )
  _png_ok(plots.plot_spectra_along_path(ts, stats, tmp_path / "spectra.png"))
