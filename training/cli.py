"""The one command-line front of every command (train.py, analysis.*): flags
and config files checked first, and one handler that turns a user error into
one line "COMMAND: message" (exit 1) instead of a traceback.

    app.run(main, flags_parser=cli.parse_flags("train.py"))   # in main(): cli.handle(...)

A user error is a `UserError` (training.errors: the layers that take user
input, such as training.config_checks, turn their libraries' ValueErrors into
it) or an OSError on a path (missing, unreadable, read-only). Anything else is
a bug and keeps its traceback.
"""

import ast
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import ml_collections
from absl import flags

from training.errors import UserError, one_line


def _config_spec(argv: list[str], flag: str = "config") -> str | None:
  """The value of --FLAG=PATH[:VARIANT] (or --FLAG PATH) in argv; None if absent."""
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith(f"--{flag}="):
      return arg.split("=", 1)[1]
    if arg == f"--{flag}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """get_config(VARIANT) of the file in "PATH[:VARIANT]", as ml_collections
  loads it (split at the first ':'); a UserError naming the file and what is
  wrong with it (missing, a syntax error, no get_config, get_config raising)."""
  path_text, sep, variant = spec.partition(":")
  path = Path(path_text).expanduser()
  if not path_text:
    raise UserError("--config is empty; pass a config file, e.g. --config=configs/relu2.py.")
  if not path.is_file():
    what = "is a directory" if path.is_dir() else "does not exist"
    raise UserError(f"Config file {path_text} {what}; pass a configs/FILE.py[:VARIANT].")
  try:
    source = path.read_text()
    code = compile(source, str(path), "exec")
  except SyntaxError as e:
    raise UserError(f"Config file {path_text}:{e.lineno}: syntax error: {e.msg}.") from None
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise UserError(f"Config file {path_text} is unreadable: {one_line(e)}.") from None
  module = importlib.util.module_from_spec(
    importlib.util.spec_from_loader("_optiscape_config_check", loader=None)
  )
  module.__file__ = str(path)
  try:
    exec(code, module.__dict__)
  except Exception as e:  # The file's own code: any error is the file's.
    raise UserError(
      f"Config file {path_text} fails to import: {type(e).__name__}: {one_line(e)}."
    ) from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise UserError(
      f"Config file {path_text} has no get_config(arg=None) function returning an "
      "ml_collections.ConfigDict."
    )
  try:
    config = get_config(variant) if sep else get_config()
  except ValueError as e:  # configs.common.parse_arg: a bad variant, in one line.
    raise UserError(f"--config={spec}: {one_line(e)}") from None
  except Exception as e:
    raise UserError(
      f"Config file {path_text}: get_config({variant!r}) raised {type(e).__name__}: {one_line(e)}."
    ) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(
      f"Config file {path_text}: get_config returned {type(config).__name__}, not an "
      "ml_collections.ConfigDict."
    )
  return config


def _override_message(argv: list[str], error: Exception) -> str:
  """--config.x=v with no field x (ml_collections raises AttributeError/KeyError)."""
  text = str(error).replace("\\", "")
  name = (re.findall(r"[A-Za-z_]\w*", text) or ["?"])[0]
  args = [a for a in argv[1:] if a.startswith("--config.") and name in a.split("=")[0].split(".")]
  hint = re.search(r'Did you mean "(\w+)"', text)
  return (
    f"unknown config field {name!r} in {' '.join(args) or argv[1:]}"
    + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
    + "; the config file's get_config defines the fields"
  )


def parse_flags(name: str) -> Callable[[list[str]], list[str]]:
  """absl's flag parser for app.run(flags_parser=...), with a bad --config file
  or flag reported in one line "NAME: ..." (exit 1)."""

  def parse(argv: list[str]) -> list[str]:
    spec = _config_spec(argv)
    if spec is not None and "--help" not in argv and "--helpfull" not in argv:
      try:
        load_config_file(spec)  # Loaded again by absl below: config files are tiny.
      except UserError as e:
        sys.exit(f"{name}: {e}")
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      # A get_config(VARIANT) error arrives wrapped with its traceback: keep the last line.
      message = [line for line in str(e).splitlines() if line.strip()][-1].strip()
    except (AttributeError, KeyError) as e:
      message = _override_message(argv, e)
    except (ValueError, TypeError) as e:
      message = one_line(e)
    sys.exit(f"{name}: bad flags: {message.rstrip('.')}. See --help.")

  return parse


def user_message(error: BaseException) -> str | None:
  """The one line of a user error; None for a bug (it keeps its traceback)."""
  if isinstance(error, UserError):
    return one_line(error)
  if isinstance(error, OSError) and error.strerror:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror}{where}; check the path and its permissions."
  return None


def handle(name: str, main: Callable[[], object]):
  """Runs main(); a user error exits with "NAME: message", Ctrl-C with 130."""
  try:
    return main()
  except KeyboardInterrupt:
    sys.exit(130)
  except Exception as e:
    message = user_message(e)
    if message is None:
      raise
    sys.exit(f"{name}: {message}")


def output_dir(text: str | None, flag: str = "--workdir", must_exist: bool = False) -> Path:
  """The absolute directory a --workdir/--out flag names, checked before any
  work: not empty, not a file, and creatable/writable (its nearest existing
  parent). ``~`` is expanded even when the shell did not (``--out=~/x``)."""
  if text is None or not str(text).strip():
    raise UserError(f"{flag} is empty; pass a directory, e.g. {flag}=runs/NAME.")
  path = Path(text).expanduser().resolve()
  if path.exists() and not path.is_dir():
    raise UserError(f"{flag}={text} is a file, not a directory; pick another path.")
  if must_exist and not path.is_dir():
    raise UserError(f"{flag}={text} does not exist.")
  parent = path
  while not parent.exists():
    parent = parent.parent
  if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
    raise UserError(f"{flag}={text}: {parent} is not writable; pick a directory you can write.")
  return path


def output_file(text: str, flag: str = "--out") -> Path:
  """The absolute file a flag names, checked before any work: not empty, not a
  directory, in a directory that exists or can be created, writable."""
  if not str(text).strip():
    raise UserError(f"{flag} is empty; pass a file name, e.g. {flag}=results.json.")
  path = Path(text).expanduser().resolve()
  if path.is_dir():
    raise UserError(f"{flag}={text} is a directory; pass a file name inside it.")
  output_dir(str(path.parent), f"{flag}'s directory")
  return path


def _parse_like(old, text: str, declared: type | None = None):
  """``text`` parsed as the type of the field's current value, as absl does (a
  None placeholder: as its ``declared`` type, config_dict.placeholder(float)'s float)."""
  if old is None and declared in (bool, int, float):
    old = declared()
  if isinstance(old, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"{text!r} is not a bool")
    return text.lower() in ("true", "1")
  if isinstance(old, (int, float)):
    return type(old)(text)
  if isinstance(old, str) or old is None:
    return text
  return type(old)(ast.literal_eval(text))


def config_from_args(args: list[str]) -> ml_collections.ConfigDict:
  """The config a train.py command line builds: --config=FILE[:VARIANT], then
  every --config.a.b=V; a UserError on a bad file, field or value. Lets a
  launcher check all its runs' configs before it starts the first."""
  spec = _config_spec(["", *args])
  if spec is None:
    raise UserError(f"No --config in {args}.")
  config = load_config_file(spec)
  for arg in args:
    if not arg.startswith("--config."):
      continue
    key, _, text = arg[len("--config.") :].partition("=")
    *parents, leaf = key.split(".")
    node = config
    try:
      for name in parents:
        node = node[name]
      old = node[leaf]
    except (KeyError, TypeError, AttributeError):
      raise UserError(f"{arg}: {spec} has no field {key!r}.") from None
    try:
      declared = node.get_type(leaf) if old is None else None
      node[leaf] = _parse_like(old, text, declared)
    except (ValueError, TypeError, SyntaxError) as e:
      raise UserError(f"{arg}: {one_line(e)}.") from None
  return config
