"""Collectives in compiled HLO text (``jitted.lower(...).compile().as_text()``), counted inside
and outside while-loop bodies: where GSPMD put communication, e.g. whether an iteration (a
Newton–Schulz loop, a scan over microbatches) communicates at every step or not at all."""

import re
from collections import Counter

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
# An instruction "name = type op(" with op a collective or its async "-start" half (the "-done"
# half is not counted again).
_OP = re.compile(r"=\s*[^=]*?\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(
  r"(?:calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)"
)
_BRANCHES = re.compile(r"(?:branch_computations|called_computations)=\{([^}]*)\}")
_BODY = re.compile(r"\bwhile\(.*?body=%?([\w.\-]+)")


def _computations(text: str) -> dict[str, list[str]]:
  """Computation name -> its instruction lines."""
  out: dict[str, list[str]] = {}
  current = None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header and not line.startswith(" "):
      current = header.group(1)
      out[current] = []
    elif current is not None and line.strip() and line.strip() != "}":
      out[current].append(line)
  return out


def _callees(lines: list[str]) -> set[str]:
  names = set()
  for line in lines:
    names.update(_CALLS.findall(line))
    for group in _BRANCHES.findall(line):
      names.update(n.strip().lstrip("%") for n in group.split(","))
  return names


def _loop_computations(comps: dict[str, list[str]]) -> set[str]:
  """The computations reachable from a while loop's body."""
  inside: set[str] = set()
  todo = [b for lines in comps.values() for line in lines for b in _BODY.findall(line)]
  while todo:
    name = todo.pop()
    if name in inside or name not in comps:
      continue
    inside.add(name)
    todo.extend(_callees(comps[name]))
  return inside


def _tally(text: str, count_line) -> dict[str, Counter]:
  """{"inside_loops": Counter, "outside_loops": Counter}: ``count_line(line)`` (a Counter)
  summed over the instructions of computations reachable from a while loop's body, and
  over the rest."""
  comps = _computations(text)
  inside = _loop_computations(comps)
  out = {"inside_loops": Counter(), "outside_loops": Counter()}
  for name, lines in comps.items():
    where = "inside_loops" if name in inside else "outside_loops"
    for line in lines:
      out[where].update(count_line(line))
  return out


def collective_counts(text: str) -> dict[str, Counter]:
  """{"inside_loops": Counter(op -> n), "outside_loops": Counter(op -> n)}: collective
  instructions in computations reachable from a while loop's body, and the rest."""
  return _tally(text, lambda line: Counter(_OP.findall(line)))


# Bytes per element of the HLO element types a collective may carry.
_ITEM_BYTES = {
  "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
  "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_TYPED_OP = re.compile(r"=\s*(\(?[^=]*?\)?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


def _type_bytes(text: str, start: bool) -> int:
  """Bytes of an instruction's result type; for an async "-start" whose result is a tuple
  (operand, result), the last element: what the collective delivers."""
  arrays = _ARRAY.findall(text)
  if start and len(arrays) > 1:
    arrays = arrays[-1:]
  total = 0
  for dtype, dims in arrays:
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _ITEM_BYTES.get(dtype, 4)
  return total


def collective_bytes(text: str) -> dict[str, Counter]:
  """As `collective_counts`, the bytes each device's collectives deliver (the sizes of their
  per-device results, after SPMD partitioning), by op: a loop body counts once, not per trip."""

  def line_bytes(line):
    out = Counter()
    for type_text, op, start in _TYPED_OP.findall(line):
      out[op] += _type_bytes(type_text, bool(start))
    return out

  return _tally(text, line_bytes)
