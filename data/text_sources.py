"""Text corpora that exist on every machine, with no download.

Three in-distribution sources (Nexus needs distinct ones: language, code, math)
and two held-out out-of-distribution (OOD) sources:

    prose     English documentation shipped with Python: the pydoc topics
              (`pydoc_data.topics.topics`) and the module docstrings of the
              standard library.
    code      The standard library's own .py files (the directory of
              `os.__file__`), without its test suites, generated codecs and the
              held-out packages CODE_OOD_PACKAGES.
    math      Generated arithmetic and word problems with worked answers
              (MATH_FAMILIES), deterministic from a seed.
    code_ood  Only the packages CODE_OOD_PACKAGES (asyncio, email, xml): a
              style and vocabulary never seen in training.
    math_ood  Problem families never seen in training (MATH_OOD_FAMILIES:
              percentages, greatest common divisors by Euclid's algorithm).

    source = load_source("code", "train")   # TextSource(documents=(...), provenance=...)

Splits: the in-distribution sources have "train" and "validation", chosen per
document by a hash of its identity (module path, topic name, problem text), so
the split is the same on every machine and run and never shares a document;
the OOD sources have one split, "test". The stdlib differs between Python
versions, so the provenance (logged when a source is built) names it.
"""

import ast
import dataclasses
import functools
import glob
import hashlib
import io
import math
import os
import sys
import tokenize

import numpy as np
from absl import logging

SOURCES = ("prose", "code", "math")
OOD_SOURCES = ("code_ood", "math_ood")
CODE_OOD_PACKAGES = ("asyncio", "email", "xml")
# Generated tables and test suites are not "code" as people write it.
_CODE_EXCLUDED_DIRS = (
  "test",
  "tests",
  "idle_test",
  "encodings",
  "site-packages",
  "pydoc_data",
  "__pycache__",
  "lib2to3",
  "turtledemo",
)
MATH_FAMILIES = (
  "addition",
  "subtraction",
  "multiplication",
  "division",
  "linear_equation",
  "shopping",
)
MATH_OOD_FAMILIES = ("percent", "gcd")


@dataclasses.dataclass(frozen=True)
class TextSource:
  name: str
  split: str
  documents: tuple[str, ...]
  provenance: str

  @property
  def num_chars(self) -> int:
    return sum(len(d) for d in self.documents)

  def describe(self) -> str:
    return (
      f"{self.name}/{self.split}: {len(self.documents)} documents, "
      f"{self.num_chars:,} characters ({self.provenance})"
    )


def load_source(
  name: str,
  split: str = "train",
  *,
  seed: int = 0,
  validation_fraction: float = 0.05,
  math_problems: int = 20000,
  max_chars: int | None = None,
  stdlib_dir: str | None = None,
) -> TextSource:
  """One source's documents in one split (see the module docstring).

  max_chars keeps the first documents (in a fixed order) up to that many
  characters; stdlib_dir replaces the standard library's directory (tests).
  """
  if name in SOURCES and split not in ("train", "validation"):
    raise ValueError(f"Source {name!r} has splits 'train' and 'validation', not {split!r}.")
  if name in OOD_SOURCES and split != "test":
    raise ValueError(f"OOD source {name!r} has only the split 'test', not {split!r}.")
  stdlib_dir = stdlib_dir or os.path.dirname(os.__file__)
  python = f"Python {sys.version.split()[0]}"
  if name == "prose":
    docs = _prose_documents(stdlib_dir)
    provenance = f"pydoc_data.topics + module docstrings under {stdlib_dir}, {python}"
  elif name in ("code", "code_ood"):
    docs = _code_documents(stdlib_dir, held_out=name == "code_ood")
    which = "only" if name == "code_ood" else "without"
    provenance = f"stdlib sources under {stdlib_dir} {which} {CODE_OOD_PACKAGES}, {python}"
  elif name in ("math", "math_ood"):
    families = MATH_OOD_FAMILIES if name == "math_ood" else MATH_FAMILIES
    docs = _math_documents(families, math_problems, seed)
    provenance = f"generated {families}, {math_problems} problems, seed {seed}"
  else:
    raise ValueError(f"Unknown text source {name!r}; known: {SOURCES + OOD_SOURCES}.")
  if name in SOURCES:
    docs = [
      (key, text)
      for key, text in docs
      if _is_validation(key, validation_fraction) == (split == "validation")
    ]
  texts = [text for _, text in docs]
  if max_chars is not None:
    texts = _truncate(texts, max_chars)
  if not texts:
    raise ValueError(
      f"Text source {name}/{split} is empty ({provenance}, validation_fraction="
      f"{validation_fraction}, max_chars={max_chars}): check that the directory "
      "holds .py files, or raise validation_fraction / max_chars / math_problems."
    )
  source = TextSource(name, split, tuple(texts), provenance)
  logging.info("Built text source %s", source.describe())
  return source


def _is_validation(key: str, fraction: float) -> bool:
  # A hash, not an RNG: the split of a document depends on it alone.
  bucket = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "little") / 2.0**64
  return bucket < fraction


def _truncate(texts: list[str], max_chars: int) -> list[str]:
  kept, total = [], 0
  for text in texts:
    if total + len(text) > max_chars:
      break
    kept.append(text)
    total += len(text)
  return kept


# ---------------------------------------------------------------- prose and code


@functools.lru_cache(maxsize=8)
def _stdlib_files(stdlib_dir: str) -> tuple[str, ...]:
  """Relative paths of the library's .py files, sorted (a fixed order)."""
  paths = glob.glob(os.path.join(stdlib_dir, "**", "*.py"), recursive=True)
  rel = (os.path.relpath(p, stdlib_dir) for p in paths)
  return tuple(
    sorted(
      r
      for r in rel
      if not set(r.split(os.sep)[:-1]) & set(_CODE_EXCLUDED_DIRS)
      and not os.path.basename(r).startswith("test_")
    )
  )


def _read(stdlib_dir: str, rel: str) -> str:
  with open(os.path.join(stdlib_dir, rel), encoding="utf-8", errors="replace") as f:
    return f.read()


def _code_documents(stdlib_dir: str, held_out: bool) -> list[tuple[str, str]]:
  docs = []
  for rel in _stdlib_files(stdlib_dir):
    if (rel.split(os.sep)[0] in CODE_OOD_PACKAGES) == held_out:
      text = _read(stdlib_dir, rel)
      if text.strip():
        docs.append((rel, text))
  return docs


def _module_docstring(source: str) -> str | None:
  """The leading string literal, read with tokenize (parsing whole modules
  with ast costs seconds for the whole library)."""
  try:
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
      if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING):
        continue
      if tok.type == tokenize.STRING:
        value = ast.literal_eval(tok.string)
        return value if isinstance(value, str) else None
      return None
  except (tokenize.TokenError, SyntaxError, ValueError):
    return None
  return None


def _prose_documents(stdlib_dir: str) -> list[tuple[str, str]]:
  docs = []
  try:
    from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top

    docs += [(f"topic:{k}", v) for k, v in sorted(topics.items())]
  except ImportError:  # some distributions strip pydoc_data
    logging.warning("pydoc_data is not installed: prose has module docstrings only.")
  for rel in _stdlib_files(stdlib_dir):
    doc = _module_docstring(_read(stdlib_dir, rel))
    if doc and len(doc.split()) >= 5:  # one-liners like "Empty." are noise
      docs.append((f"module:{rel}", doc.strip() + "\n"))
  return docs


# ---------------------------------------------------------------- math

_NAMES = ("Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jun")
_ITEMS = (
  ("pen", "pens"),
  ("book", "books"),
  ("apple", "apples"),
  ("ticket", "tickets"),
  ("notebook", "notebooks"),
  ("cup", "cups"),
)


def _addition(rng):
  a, b = rng.integers(10, 10000, 2)
  return f"What is {a} + {b}?\n{a} + {b} = {a + b}.\nAnswer: {a + b}"


def _subtraction(rng):
  a, b = sorted(rng.integers(10, 10000, 2), reverse=True)
  return f"What is {a} - {b}?\n{a} - {b} = {a - b}.\nAnswer: {a - b}"


def _multiplication(rng):
  a, b = int(rng.integers(11, 100)), int(rng.integers(11, 100))
  tens, ones = b - b % 10, b % 10
  return (
    f"What is {a} × {b}?\n{a} × {b} = {a} × {tens} + {a} × {ones} "
    f"= {a * tens} + {a * ones} = {a * b}.\nAnswer: {a * b}"
  )


def _division(rng):
  b, q = int(rng.integers(2, 20)), int(rng.integers(2, 200))
  r = int(rng.integers(0, b))
  a = b * q + r
  return (
    f"Divide {a} by {b}. What are the quotient and remainder?\n"
    f"{b} × {q} = {b * q}, and {a} - {b * q} = {r}.\nAnswer: quotient {q}, remainder {r}"
  )


def _linear_equation(rng):
  a, x, b = int(rng.integers(2, 13)), int(rng.integers(-20, 21)), int(rng.integers(1, 50))
  c = a * x + b
  return (
    f"Solve for x: {a}x + {b} = {c}.\nSubtract {b} from both sides: {a}x = {c - b}.\n"
    f"Divide both sides by {a}: x = {x}.\nAnswer: x = {x}"
  )


def _shopping(rng):
  name = _NAMES[rng.integers(len(_NAMES))]
  i, j = rng.choice(len(_ITEMS), 2, replace=False)
  n1, p1, n2, p2 = (int(v) for v in rng.integers(2, 12, 4))
  c1, c2 = n1 * p1, n2 * p2
  return (
    f"{name} buys {n1} {_ITEMS[i][1]} at {p1} dollars each and {n2} {_ITEMS[j][1]} at "
    f"{p2} dollars each. How much does {name} spend?\n"
    f"The {_ITEMS[i][1]} cost {n1} × {p1} = {c1} dollars. The {_ITEMS[j][1]} cost "
    f"{n2} × {p2} = {c2} dollars. Together: {c1} + {c2} = {c1 + c2} dollars.\n"
    f"Answer: {c1 + c2}"
  )


def _percent(rng):
  p, base = int(rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 75])), int(rng.integers(1, 100)) * 20
  return (
    f"What is {p}% of {base}?\n{p}% of {base} = {base} × {p} / 100 = {base * p} / 100 "
    f"= {base * p // 100}.\nAnswer: {base * p // 100}"
  )


def _gcd(rng):
  a, b = sorted((int(v) for v in rng.integers(12, 1000, 2)), reverse=True)
  steps, x, y = [], a, b
  while y:
    steps.append(f"{x} = {x // y} × {y} + {x % y}")
    x, y = y, x % y
  return (
    f"Find the greatest common divisor of {a} and {b}.\nBy Euclid's algorithm: "
    + "; ".join(steps)
    + f".\nAnswer: {math.gcd(a, b)}"
  )


_GENERATORS = {
  "addition": _addition,
  "subtraction": _subtraction,
  "multiplication": _multiplication,
  "division": _division,
  "linear_equation": _linear_equation,
  "shopping": _shopping,
  "percent": _percent,
  "gcd": _gcd,
}


def math_problem(family: str, rng: np.random.Generator) -> str:
  """One problem of a family, with its worked answer."""
  return _GENERATORS[family](rng) + "\n"


def _math_documents(families, num_problems: int, seed: int) -> list[tuple[str, str]]:
  rng = np.random.default_rng([seed, len(families)])
  docs = [math_problem(families[k % len(families)], rng) for k in range(num_problems)]
  # The key is the text: a problem drawn twice lands in one split only.
  return [(text, text) for text in docs]
