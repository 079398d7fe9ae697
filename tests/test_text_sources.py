"""data.text_sources: which files each source takes, deterministic disjoint
splits, correct worked answers, held-out families and packages, clear errors."""

import logging
import math
import re
from pydoc_data.topics import topics

import pytest

from data.text_sources import (
  CODE_OOD_PACKAGES,
  MATH_FAMILIES,
  OOD_SOURCES,
  SOURCES,
  load_source,
  math_problem,
)


@pytest.fixture
def stdlib(tmp_path):
  """A fake standard library whose files we know."""
  files = {
    "alpha.py": '"""The alpha module does five useful things."""\nx = 1\n',
    "beta.py": "# comment\n'''Beta: a module docstring after a comment.'''\ny = 2\n",
    "short.py": '"""Empty."""\n',
    "pkg/gamma.py": "def gamma():\n  return 3\n",
    "blank.py": "\n\n",
    "asyncio/loop.py": '"""The held-out event loop package text."""\nasync def f(): pass\n',
    "test/test_alpha.py": "assert True\n",
    "encodings/cp0.py": "table = {}\n",
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  return str(tmp_path)


def _both_splits(name, **kw):
  return [load_source(name, s, **kw) for s in ("train", "validation")]


def test_code_takes_library_files_without_tests_codecs_or_held_out(stdlib):
  train = load_source("code", "train", stdlib_dir=stdlib, validation_fraction=0.0)
  assert set(train.documents) == {
    '"""The alpha module does five useful things."""\nx = 1\n',
    "# comment\n'''Beta: a module docstring after a comment.'''\ny = 2\n",
    '"""Empty."""\n',
    "def gamma():\n  return 3\n",
  }
  with pytest.raises(ValueError, match="code/validation is empty"):
    load_source("code", "validation", stdlib_dir=stdlib, validation_fraction=0.0)
  ood = load_source("code_ood", "test", stdlib_dir=stdlib)
  assert ood.documents == ('"""The held-out event loop package text."""\nasync def f(): pass\n',)


def test_prose_is_pydoc_topics_and_module_docstrings(stdlib):
  docs = sum((s.documents for s in _both_splits("prose", stdlib_dir=stdlib)), ())
  assert len(docs) == len(topics) + 3  # alpha, beta, asyncio/loop; "Empty." is too short
  assert "The alpha module does five useful things.\n" in docs
  assert "Beta: a module docstring after a comment.\n" in docs
  assert set(topics.values()) <= set(docs)


def test_splits_are_deterministic_disjoint_and_sized():
  train, val = _both_splits("math", math_problems=4000, validation_fraction=0.1)
  again = load_source("math", "validation", math_problems=4000, validation_fraction=0.1)
  assert val.documents == again.documents
  assert not set(train.documents) & set(val.documents)
  assert len(train.documents) + len(val.documents) == 4000
  assert 0.08 < len(val.documents) / 4000 < 0.12
  other_seed = load_source(
    "math", "validation", math_problems=4000, seed=1, validation_fraction=0.1
  )
  assert other_seed.documents != val.documents


def _check_answer(text):
  """Recomputes the answer of any family from its question."""
  answer = text.split("Answer: ")[1].strip()
  if m := re.match(r"What is (\d+) \+ (\d+)\?", text):
    return int(answer) == int(m[1]) + int(m[2])
  if m := re.match(r"What is (\d+) - (\d+)\?", text):
    return int(answer) == int(m[1]) - int(m[2]) >= 0
  if m := re.match(r"What is (\d+) × (\d+)\?", text):
    return int(answer) == int(m[1]) * int(m[2])
  if m := re.match(r"Divide (\d+) by (\d+)\.", text):
    q, r = map(int, re.findall(r"\d+", answer))
    return (q, r) == divmod(int(m[1]), int(m[2]))
  if m := re.match(r"Solve for x: (\d+)x \+ (\d+) = (-?\d+)\.", text):
    x = int(answer.split("= ")[1])
    return int(m[1]) * x + int(m[2]) == int(m[3])
  if m := re.match(r"\w+ buys (\d+) \w+ at (\d+) dollars each and (\d+) \w+ at (\d+)", text):
    return int(answer) == int(m[1]) * int(m[2]) + int(m[3]) * int(m[4])
  if m := re.match(r"What is (\d+)% of (\d+)\?", text):
    return int(answer) * 100 == int(m[1]) * int(m[2])
  if m := re.match(r"Find the greatest common divisor of (\d+) and (\d+)\.", text):
    return int(answer) == math.gcd(int(m[1]), int(m[2]))
  raise AssertionError(f"unrecognized problem {text!r}")


def test_math_worked_answers_are_right_and_ood_families_are_held_out():
  train = load_source("math", "train", math_problems=1200)
  ood = load_source("math_ood", "test", math_problems=300)
  assert all(_check_answer(t) for t in train.documents + ood.documents)
  # Every training family appears; no OOD family does.
  assert sum("%" in t or "greatest common divisor" in t for t in train.documents) == 0
  assert sum("%" in t for t in ood.documents) == 150
  assert sum("greatest common divisor" in t for t in ood.documents) == 150
  assert math_problem("gcd", __import__("numpy").random.default_rng(0)).endswith("\n")
  assert len(MATH_FAMILIES) == 6


def test_real_library_sources_build_and_log(caplog):
  # absl's logger gets its own level once any test parsed absl flags: set it too.
  caplog.set_level(logging.INFO)
  caplog.set_level(logging.INFO, logger="absl")
  code = load_source("code", "train")
  assert code.num_chars > 1_000_000 and any("def " in d for d in code.documents)
  assert "without ('asyncio', 'email', 'xml')" in code.provenance
  assert "code/train:" in caplog.text and "characters" in caplog.text
  ood = load_source("code_ood", "test")
  assert any("asyncio" in d for d in ood.documents) and CODE_OOD_PACKAGES[0] == "asyncio"
  assert not set(ood.documents) & set(code.documents)


def test_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="code/train is empty"):
    load_source("code", "train", stdlib_dir=str(tmp_path))
  with pytest.raises(ValueError, match="Unknown text source 'poetry'"):
    load_source("poetry")
  with pytest.raises(ValueError, match="only the split 'test'"):
    load_source("math_ood", "train")
  with pytest.raises(ValueError, match="'train' and 'validation'"):
    load_source("math", "test")
  assert SOURCES == ("prose", "code", "math") and OOD_SOURCES == ("code_ood", "math_ood")
