"""`dopd-cli`: `--help` per command, `env`, and the libraries' start-up noise kept out unless asked for."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dopd.cli import main
from dopd.cli_help import COMMANDS
from dopd.hparams import DataArguments, ModelArguments, RolloutArguments
from dopd.verbosity import uses_deepspeed

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED_LINE = "Setting accelerator to CPU"
FUTURE_WARNING = "`is_gradient_checkpointing` is deprecated"


def _help(field_owner: type, name: str) -> str:
    field = {f.name: f for f in dataclasses.fields(field_owner)}[name]
    return " ".join(field.metadata["help"].split())


def _run_main(capsys, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help_prints_usage_and_keys_and_exits_0(capsys, flag):
    code, out = _run_main(capsys, ["train", "configs/demo/llm_demo.yaml", flag])
    assert code == 0
    assert out.startswith("usage: dopd-cli train CONFIG.yaml")
    flat = " ".join(out.split())
    for owner, key in ((ModelArguments, "model_name_or_path"), (RolloutArguments, "num_generations"),
                       (DataArguments, "dataset")):
        assert f"{key} = " in out and _help(owner, key) in flat  # the dataclass's own help string
    assert "learning_rate = " in out and "deepspeed = " in out  # the training keys
    assert "\nmodel:\n" in out and "\nrollout:\n" in out  # grouped by dataclass


def test_every_command_has_help(capsys):
    for command in COMMANDS:
        code, out = _run_main(capsys, [command, "--help"])
        assert code == 0 and out.startswith(f"usage: dopd-cli {command}"), out[:200]
    code, out = _run_main(capsys, ["check-data", "--help"])
    assert "rollout:" not in out and "image_max_pixels = " in out  # only what check-data reads
    code, out = _run_main(capsys, ["help", "export"])
    assert code == 0 and "export_dir = " in out


def test_top_level_help_lists_commands(capsys):
    code, out = _run_main(capsys, ["--help"])
    assert code == 0
    for command in COMMANDS:
        assert f"dopd-cli {command}" in out


def test_help_is_not_taken_from_an_override_value(capsys):
    with pytest.raises(SystemExit) as exit_info:  # `key=--help` is a value: the command runs (and fails on the key)
        main(["check-data", "no_such_key=--help"])
    assert exit_info.value.code == 2
    assert "no_such_key" in capsys.readouterr().err


def test_uses_deepspeed_reads_yaml_and_overrides(tmp_path):
    with_ds = tmp_path / "ds.yaml"
    with_ds.write_text("deepspeed: configs/deepspeed/ds_z2_config.json\n")
    without = tmp_path / "plain.yaml"
    without.write_text("max_steps: 3\n")
    assert uses_deepspeed(str(with_ds), []) and not uses_deepspeed(str(without), [])
    assert uses_deepspeed(None, ["deepspeed=x.json"]) and not uses_deepspeed(str(with_ds), ["deepspeed=none"])
    assert not uses_deepspeed(str(tmp_path / "missing.yaml"), [])


def test_env_reports_qwen_vl_utils_with_its_version_and_image_path():
    from importlib.metadata import version

    from dopd.env import collect_env

    info = collect_env()
    assert info["qwen_vl_utils"] == f"{version('qwen-vl-utils')} (image path: works)"
    assert info["torch"] == version("torch")


def _cli(*args: str, verbose_env: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.pop("DOPD_VERBOSE", None)
    if verbose_env:
        env["DOPD_VERBOSE"] = "1"
    return subprocess.run([sys.executable, "-m", "dopd", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")
def test_env_hides_deepspeeds_accelerator_warning_unless_verbose():
    quiet = _cli("env")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert DEEPSPEED_LINE not in quiet.stdout + quiet.stderr
    assert "deepspeed" in quiet.stdout  # still reported
    for verbose in (_cli("env", "--verbose"), _cli("env", verbose_env=True)):
        assert verbose.returncode == 0 and DEEPSPEED_LINE in verbose.stdout + verbose.stderr


def test_export_hides_peft_deprecation_warning_unless_verbose(tiny_model, tmp_path):
    from dopd.hparams import FinetuningArguments
    from dopd.model import apply_finetuning, load_adapter, load_model

    path = tiny_model("qwen2")
    margs = ModelArguments(model_name_or_path=path, torch_dtype="float32")
    adapter = load_adapter(path, margs)
    model = apply_finetuning(load_model(path, margs, adapter=adapter), adapter,
                             FinetuningArguments(finetuning_type="lora", lora_rank=4), margs)
    model.save_pretrained(str(tmp_path / "lora"))
    args = [f"model_name_or_path={path}", f"adapter_name_or_path={tmp_path / 'lora'}", "torch_dtype=float32"]
    quiet = _cli("export", *args, f"export_dir={tmp_path / 'a'}")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert FUTURE_WARNING not in quiet.stdout + quiet.stderr
    verbose = _cli("export", *args, f"export_dir={tmp_path / 'b'}", "--verbose")
    assert verbose.returncode == 0 and FUTURE_WARNING in verbose.stdout + verbose.stderr


def test_deepspeed_records_below_error_are_dropped_unless_shown():
    import logging

    from dopd.verbosity import DEEPSPEED_LOGGER, quiet_library_noise

    ds_logger = logging.getLogger(DEEPSPEED_LOGGER)
    record = ds_logger.makeRecord(DEEPSPEED_LOGGER, logging.WARNING, __file__, 1, DEEPSPEED_LINE, (), None)
    error = ds_logger.makeRecord(DEEPSPEED_LOGGER, logging.ERROR, __file__, 1, "a real error", (), None)
    try:
        quiet_library_noise(show_deepspeed=False, show_deprecations=True)
        assert not ds_logger.filter(record) and ds_logger.filter(error)
        quiet_library_noise(show_deepspeed=True, show_deprecations=True)  # a deepspeed config, or --verbose
        assert ds_logger.filter(record)
    finally:
        quiet_library_noise(show_deepspeed=True, show_deprecations=True)
