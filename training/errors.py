"""The one error type for user errors: a message of one line naming the
problem and the fix. Every command prints it with one handler, no traceback."""


class UserError(ValueError):
  """Bad input (config, path, file) or a run that cannot go on; one line."""


# A config that cannot run (kept as a name: callers and tests use it).
ConfigError = UserError


class NonFiniteError(UserError):
  """The loss or the parameters became NaN/inf; names the step and checkpoint."""


class DiskFullError(UserError):
  """A write failed for lack of space; names what, the space left and the
  last good checkpoint (intact), so the same command resumes once freed."""


def one_line(error: BaseException) -> str:
  """The message of a lower layer's error, folded to one line."""
  return " ".join(str(error).split())
