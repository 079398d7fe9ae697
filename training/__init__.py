"""The trainer as a library: config -> task -> loop -> workdir.

    from training import run
    summary = run(config, workdir)   # trains (or resumes) a run; see training/runner.py

Modules, one job each: `runner` (training.run: check, claim the workdir, train), `tasks` (the ONE builder from a config to model, data
and loss, used by the trainer, analysis and tests), `config_checks` (schemas,
validation, the resume-config check), `checkpoints` (one orbax save/restore for
both trainers and the non-finite guard), `metrics` (JSONL + TensorBoard, the
summary's constraint values, rates), `loop` (the shared loop: resume,
periodic actions, SIGTERM, progress), `relu2` and `gpt2` (per-model steps),
`perf` (the matmul-rate measurement), `similarity` (the sources' gradient
cosines), `workdir` (the on-disk format), `errors` (the one user-error type).
"""

from training.errors import ConfigError, NonFiniteError, UserError
from training.runner import run, train_and_evaluate

__all__ = ["run", "train_and_evaluate", "UserError", "ConfigError", "NonFiniteError"]
