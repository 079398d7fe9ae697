"""Fixtures shared by test modules."""

import jax
import pytest


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache for one module: runs of one shape share
  compiled steps (XLA:CPU compiles take most of a short run). The old settings
  come back afterwards, so other modules are unaffected. Use with
  ``pytestmark = pytest.mark.usefixtures("compilation_cache")``."""
  names = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
  )
  old = {n: getattr(jax.config, n) for n in names}
  cache = tmp_path_factory.mktemp("jax_cache")
  for n, v in zip(names, (str(cache), 0.0, 0)):
    jax.config.update(n, v)
  yield cache
  for n, v in old.items():
    jax.config.update(n, v)
