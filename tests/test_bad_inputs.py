"""Bad input, command by command: each case must exit non-zero with one line
that names the field or path, no traceback, and leave nothing behind.

The train.py config cases run in-process (the same code path as the command:
training.cli builds the config, training.run checks it); every command's
wiring (flags, config files, paths) runs as a subprocess in
tests/test_bad_commands.py."""

import os
import subprocess
from pathlib import Path

import pytest

import training
from training import cli
from training.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RELU2 = "configs/relu2.py:runlocal,steps=20"
GPT2 = "configs/gpt2.py:runlocal,steps=4"

# (case, train.py arguments, words the one line must hold).
TRAIN_CASES = [
  ("b1_above_one", [RELU2, "--config.optimizer.b1=1.5"], ["optimizer.b1=1.5", "[0, 1)"]),
  ("b2_negative", [RELU2, "--config.optimizer.b2=-0.5"], ["optimizer.b2=-0.5"]),
  ("eps_negative", [RELU2, "--config.optimizer.eps=-1.0"], ["optimizer.eps=-1.0", "> 0"]),
  ("lr_variant_zero", ["configs/relu2.py:runlocal,lr=0"], ["optimizer.learning_rate=0.0"]),
  ("lr_nan", [RELU2, "--config.optimizer.learning_rate=nan"], ["optimizer.learning_rate=nan"]),
  ("lr_inf", [RELU2, "--config.optimizer.learning_rate=inf"], ["optimizer.learning_rate=inf"]),
  ("wd_inf", [RELU2, "--config.optimizer.weight_decay=inf"], ["optimizer.weight_decay=inf"]),
  ("wd_negative", [RELU2, "--config.optimizer.weight_decay=-1.0"], ["optimizer.weight_decay"]),
  (
    "final_lr_negative",
    [RELU2, "--config.optimizer.final_lr_fraction=-2.0"],
    ["optimizer.final_lr_fraction=-2.0", "[0, 1]"],
  ),
  ("decay_fraction_zero", [RELU2, "--config.optimizer.decay_fraction=0.0"], ["decay_fraction"]),
  ("clip_negative", [RELU2, "--config.optimizer.grad_clip_norm=-1.0"], ["grad_clip_norm"]),
  ("warmup_negative", [RELU2, "--config.optimizer.warmup_steps=-3"], ["warmup_steps=-3"]),
  ("warmup_too_long", [RELU2, "--config.optimizer.warmup_steps=500"], ["longer than num_steps"]),
  ("schedule_unknown", [RELU2, "--config.optimizer.schedule=linear"], ["optimizer.schedule"]),
  ("optimizer_unknown", ["configs/relu2.py:runlocal,optimizer=adam"], ["adam"]),
  (
    "muon_ns_steps_zero",
    ["configs/relu2.py:runlocal,optimizer=muon", "--config.optimizer.ns_steps=0"],
    ["optimizer.ns_steps=0"],
  ),
  (
    "muon_method_unknown",
    ["configs/relu2.py:runlocal,optimizer=muon", "--config.optimizer.method=qr"],
    ["optimizer.method='qr'"],
  ),
  (
    "lion_k_unknown_k",
    ["configs/relu2.py:runlocal,optimizer=lion_k", "--config.optimizer.k=l7"],
    ["Unknown K 'l7'"],
  ),
  (
    "sgd_momentum_one",
    ["configs/relu2.py:runlocal,optimizer=sgd", "--config.optimizer.momentum=1.0"],
    ["optimizer.momentum=1.0"],
  ),
  ("steps_variant_zero", ["configs/relu2.py:runlocal,steps=0"], ["num_steps=0"]),
  ("width_zero", ["configs/relu2.py:runlocal,width=0"], ["model.width=0"]),
  ("seeds_zero", ["configs/relu2.py:runlocal,seeds=0"], ["num_seeds=0"]),
  ("seed_negative", [RELU2, "--config.seed=-1"], ["seed=-1"]),
  ("n_train_zero", [RELU2, "--config.data.n_train=0"], ["data.n_train=0"]),
  ("label_noise_nan", [RELU2, "--config.data.label_noise=nan"], ["data.label_noise=nan"]),
  ("label_noise_inf", [RELU2, "--config.data.label_noise=inf"], ["data.label_noise=inf"]),
  ("task_unknown", [RELU2, "--config.data.task=spiral"], ["data.task='spiral'"]),
  ("logistic_regression", [RELU2, "--config.data.loss=logistic"], ["needs ±1 labels"]),
  ("checkpoint_every_zero", [RELU2, "--config.checkpoint_every=0"], ["checkpoint_every=0"]),
  ("override_wrong_type", [RELU2, "--config.model.width=wide"], ["--config.model.width=wide"]),
  ("override_unknown_field", [RELU2, "--config.model.depth=3"], ["no field 'model.depth'"]),
  ("variant_unknown", ["configs/relu2.py:runlocal,depth=3"], ["Unknown config variant 'depth'"]),
  ("variant_wrong_type", ["configs/relu2.py:width=wide"], ["width='wide' is not a int"]),
  ("gpt2_batch_variant_zero", ["configs/gpt2.py:runlocal,batch=0"], ["batch_size=0"]),
  ("gpt2_seq_len_too_long", ["configs/gpt2.py:runlocal,seq_len=100000"], ["exceeds the context"]),
  ("gpt2_dropout_one", [GPT2, "--config.model.dropout=1.0"], ["model.dropout=1.0"]),
  ("gpt2_tokenizer_unknown", [GPT2, "--config.data.tokenizer=words"], ["data.tokenizer"]),
  ("gpt2_bpe_vocab_small", [GPT2, "--config.data.bpe_vocab_size=100"], ["data.bpe_vocab_size"]),
  (
    "gpt2_bpe_vocab_unbuildable",  # found only by training it: the workdir is removed again
    [GPT2, "--config.data.tokenizer=bpe", "--config.data.bpe_vocab_size=300000"],
    ["only yields", "lower data.bpe_vocab_size"],
  ),
  ("gpt2_source_twice", [GPT2, "--config.data.sources=prose+prose"], ["each once"]),
  ("gpt2_source_unknown", [GPT2, "--config.data.sources=prose+poetry"], ["data.sources"]),
  ("gpt2_weights_negative", [GPT2, "--config.data.weights=1+-1+1"], ["data.weights"]),
  ("gpt2_weights_inf", [GPT2, "--config.data.weights=1+inf+1"], ["data.weights"]),
  ("gpt2_weights_count", [GPT2, "--config.data.weights=1+1"], ["has 2 entries"]),
  ("gpt2_source_kind", [GPT2, "--config.data.source=http://x"], ["data.source"]),
  (
    "gpt2_shards_missing",
    [GPT2, "--config.data.source=shards:/nonexistent/{split}.bin"],
    ["/nonexistent"],
  ),
  ("gpt2_text_missing", [GPT2, "--config.data.source=text:/nonexistent/*.txt"], ["/nonexistent"]),
  (
    "gpt2_nexus_inner_steps_zero",
    ["configs/gpt2.py:runlocal,nexus", "--config.optimizer.nexus.inner_steps=0"],
    ["optimizer.nexus.inner_steps=0"],
  ),
  ("gpt2_two_seeds", [GPT2, "--config.num_seeds=2"], ["num_seeds=2"]),
]


@pytest.mark.parametrize("case,args,words", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses_bad_configs_before_creating_anything(tmp_path, case, args, words):
  run = tmp_path / "run"
  with pytest.raises(UserError) as info:
    config = cli.config_from_args([f"--config={args[0]}", *args[1:]])
    training.run(config, run)
  message = str(info.value)
  assert "\n" not in message, message
  for word in words:
    assert word in message, message
  assert not run.exists()


def test_a_placeholder_field_parses_as_its_declared_type():
  # configs/common.py's None placeholders (an optional learning rate) take a float
  # from the command line, as absl's config flags do; a non-number is one line.
  args = [f"--config={RELU2},optimizer=symmetric"]
  config = cli.config_from_args([*args, "--config.optimizer.head_learning_rate=0.001"])
  assert config.optimizer.head_learning_rate == 0.001
  assert config.optimizer.embed_learning_rate is None
  with pytest.raises(UserError, match="head_learning_rate=fast"):
    cli.config_from_args([*args, "--config.optimizer.head_learning_rate=fast"])


def test_an_empty_text_file_is_one_line(tmp_path):
  (tmp_path / "empty.txt").write_text("")
  config = cli.config_from_args(
    [f"--config={GPT2}", f"--config.data.source=text:{tmp_path}/empty.txt"]
  )
  with pytest.raises(UserError, match="empty.txt") as info:
    training.run(config, tmp_path / "run")
  assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# Config files, as every command loads them.


def _write(path: Path, text: str) -> str:
  path.write_text(text)
  return str(path)


CONFIG_FILE_CASES = [
  ("syntax_error", "def get_config(:\n", "syntax error"),
  ("raising_get_config", "def get_config(arg=None):\n  raise RuntimeError('boom')\n", "boom"),
  ("key_error_inside", "def get_config(arg=None):\n  return {}['x']\n", "raised KeyError"),
  ("no_get_config", "x = 1\n", "has no get_config"),
  ("import_error", "import no_such_module_xyz\n", "fails to import"),
  ("returns_dict", "def get_config(arg=None):\n  return {'a': 1}\n", "not an ml_collections"),
]


@pytest.mark.parametrize(
  "case,text,words", CONFIG_FILE_CASES, ids=[c[0] for c in CONFIG_FILE_CASES]
)
def test_broken_config_files_are_one_line_naming_the_file(tmp_path, case, text, words):
  path = _write(tmp_path / "broken.py", text)
  with pytest.raises(UserError) as info:
    cli.load_config_file(path)
  message = str(info.value)
  assert words in message and path in message and "\n" not in message


def test_missing_and_directory_config_files(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    cli.load_config_file(str(tmp_path / "none.py"))
  with pytest.raises(UserError, match="is a directory"):
    cli.load_config_file(str(tmp_path))
  with pytest.raises(UserError, match="--config is empty"):
    cli.load_config_file("")


# ---------------------------------------------------------------------------
# Paths.


def test_output_paths_are_checked_first(tmp_path, monkeypatch):
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="is empty"):
    cli.output_dir("", "--out")
  with pytest.raises(UserError, match="is a file"):
    cli.output_dir(str(tmp_path / "file"), "--out")
  with pytest.raises(UserError, match="is a directory"):
    cli.output_file(str(tmp_path), "--out")
  monkeypatch.setenv("HOME", str(tmp_path))  # "~" the shell left alone (--out=~/x)
  assert cli.output_dir("~/runs/a") == tmp_path / "runs" / "a"
  assert not (tmp_path / "runs").exists()  # checked, not created


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_a_read_only_location_is_refused(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]).returncode:
    pytest.skip("mount is not permitted here")
  try:
    with pytest.raises(UserError, match="is not writable"):
      cli.output_dir(str(ro / "run"))
  finally:
    subprocess.run(["umount", str(ro)], check=True)
