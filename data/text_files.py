"""A user's own UTF-8 files as documents (data.source = "text:GLOB[+GLOB...]").

Each file is a document; a hash of its path relative to the glob's literal
directory puts VALIDATION_FRACTION of them in validation (at least one file on
each side when there are two or more), so the split is the same on every
machine. A glob matching one file splits its text instead: the first 90% (up
to the next line break) trains, the rest validates. Errors are one line naming
the path and the fix.
"""

import codecs
import glob
import hashlib
import itertools
import os
import re
from pathlib import Path

VALIDATION_FRACTION = 0.1
_MAGIC = re.compile(r"[*?[]")


def _glob_root(pattern: str) -> Path:
  """The literal directory a glob starts from (a file's own directory)."""
  parts = Path(os.path.expanduser(pattern)).parts
  literal = list(itertools.takewhile(lambda p: not _MAGIC.search(p), parts))
  if len(literal) == len(parts):
    return Path(*parts).parent
  return Path(*literal) if literal else Path(".")


def glob_name(pattern: str) -> str:
  """A readable source name: a file's stem, else the glob's literal directory,
  else its extension ("*.txt" -> "txt")."""
  path = Path(os.path.expanduser(pattern))
  raw = path.stem if not _MAGIC.search(pattern) else _glob_root(pattern).name
  if raw in ("", ".", ".."):
    raw = path.suffix.lstrip(".") if not _MAGIC.search(path.suffix) else ""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_.") or "text"


def glob_files(pattern: str) -> list[Path]:
  """The files a glob names, sorted (directories it matches are skipped)."""
  expanded = os.path.expanduser(pattern)
  if not _MAGIC.search(expanded):
    path = Path(expanded)
    if path.is_dir():
      raise ValueError(
        f"Text path {expanded!r} is a directory; give its files as a glob, e.g. "
        f"text:{expanded.rstrip('/')}/**/*.txt."
      )
    if not path.exists():
      raise FileNotFoundError(f"Text file {expanded!r} does not exist; check the path.")
    return [path]
  files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
  if not files:
    raise FileNotFoundError(
      f"No files match the glob {expanded!r} (relative to {Path.cwd()}); check the path and "
      "the extension."
    )
  return files


def check_text_file(path: Path) -> None:
  if path.stat().st_size == 0:
    raise ValueError(f"Text file {str(path)!r} is empty; delete it or leave it out of the glob.")
  with path.open("rb") as f:
    _decode(f.read(1 << 16), path, final=False)  # the head: reading everything is not cheap


def _decode(data: bytes, path: Path, final: bool = True) -> str:
  """UTF-8 (a leading byte-order mark dropped); final=False accepts a cut tail."""
  try:
    text = codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    return text.removeprefix("\ufeff")
  except UnicodeDecodeError as e:
    raise ValueError(
      f"Text file {str(path)!r} is not UTF-8 (byte 0x{data[e.start]:02x} at offset "
      f"{e.start}); convert it (e.g. iconv -f latin1 -t utf-8) or leave it out of the glob."
    ) from None


def _read_text(path: Path) -> str:
  check_text_file(path)
  return _decode(path.read_bytes(), path)


def _bucket(key: str) -> float:
  """A hash in [0, 1): the split of a document depends on its key alone."""
  return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "little") / 2.0**64


def _validation_keys(keys: list[str]) -> set[str]:
  """About VALIDATION_FRACTION of the keys, at least one, never all."""
  ranked = sorted(keys, key=_bucket)
  count = sum(_bucket(k) < VALIDATION_FRACTION for k in keys)
  return set(ranked[: min(max(count, 1), len(keys) - 1)])


def text_documents(pattern: str, split: str) -> list[str]:
  files = glob_files(pattern)
  if len(files) == 1:
    return [_split_single(_read_text(files[0]), split, files[0])]
  root = _glob_root(pattern)
  keys = [f.relative_to(root).as_posix() for f in files]
  held_out = _validation_keys(keys)
  return [
    _read_text(f) for f, key in zip(files, keys) if (key in held_out) == (split == "validation")
  ]


def _split_single(text: str, split: str, path: Path) -> str:
  """The first ~90% of a lone file's text trains, the rest validates."""
  if len(text) < 2:
    raise ValueError(
      f"Text file {str(path)!r} is the only file of its glob and too short to split into "
      "train and validation; add text or files."
    )
  cut = min(max(int(len(text) * (1 - VALIDATION_FRACTION)), 1), len(text) - 1)
  newline = text.find("\n", cut)
  if 0 <= newline < len(text) - 1:
    cut = newline + 1
  return text[:cut] if split == "train" else text[cut:]
