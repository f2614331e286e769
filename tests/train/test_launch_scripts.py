"""scripts/train_*.sh as the README runs them (issue 26, item 2), with a stand-in `python` that prints the command
it was given (no model loads): which config runs without an argument, with and without CUDA, and the LoRA script
forcing `finetuning_type=lora` over any config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$1" == "-c" ]]; then exit "$FAKE_CUDA_RC"; fi  # the launcher's torch.cuda.is_available() probe
echo "RAN python $*"
"""


def run_script(tmp_path: Path, script: str, *args: str, cuda: bool) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_CUDA_RC": "0" if cuda else "1", "NPROC_PER_NODE": "1"}
    return subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)


def ran(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RAN "))
    return line.split()[5:]  # after `RAN python -m dopd train`


@pytest.mark.parametrize("script,recipe,demo", [
    ("train_vlm_dopd.sh", "recipes/qwen3vl_8b_to_2b_dopd.yaml", "demo/vlm_demo.yaml"),
    ("train_llm_dopd.sh", "recipes/qwen3_8b_to_1.7b_dopd.yaml", "demo/llm_demo.yaml"),
    ("train_vlm_dopd_lora.sh", "recipes/qwen3vl_8b_to_2b_dopd_lora.yaml", "demo/vlm_demo_lora.yaml"),
])
def test_no_config_runs_the_recipe_on_cuda_and_the_demo_elsewhere(tmp_path, script, recipe, demo) -> None:
    for cuda, want in ((True, recipe), (False, demo)):
        proc = run_script(tmp_path, script, "max_steps=2", cuda=cuda)
        args = ran(proc)
        assert args[0].endswith("configs/" + want) and "max_steps=2" in args, (cuda, args)
        said = [line for line in proc.stdout.splitlines() if line.startswith("no config given")]
        assert len(said) == 1 and want in said[0] and ("CUDA is available" if cuda else "no CUDA") in said[0]


def test_a_given_config_runs_as_given_without_the_note(tmp_path) -> None:
    proc = run_script(tmp_path, "train_vlm_dopd.sh", "configs/demo/vlm_demo.yaml", "max_steps=2", cuda=False)
    assert ran(proc)[:2] == ["configs/demo/vlm_demo.yaml", "max_steps=2"]
    assert "no config given" not in proc.stdout


def test_lora_script_trains_lora_whatever_the_config_says(tmp_path) -> None:
    # configs/demo/vlm_demo.yaml says `finetuning_type: full`; the last override wins
    args = ran(run_script(tmp_path, "train_vlm_dopd_lora.sh", "configs/demo/vlm_demo.yaml", "max_steps=2", cuda=False))
    assert args[0] == "configs/demo/vlm_demo.yaml" and args[-1] == "finetuning_type=lora"
    proc = run_script(tmp_path, "train_vlm_dopd_lora.sh", "configs/demo/vlm_demo.yaml", "finetuning_type=full",
                      cuda=False)
    assert proc.returncode == 2 and "finetuning_type=full" in proc.stderr and "RAN" not in proc.stdout


def test_lora_override_parses_to_lora() -> None:
    """What the LoRA script runs, parsed as `dopd-cli train` parses it."""
    from dopd.hparams import parse_config

    cfg = parse_config(str(REPO / "configs" / "demo" / "vlm_demo.yaml"), ["max_steps=2", "finetuning_type=lora"])
    assert cfg.finetuning.finetuning_type == "lora"


def test_eval_script_without_a_config_evaluates_the_demo(tmp_path) -> None:
    """`bash scripts/eval.sh` (README, Evaluation) named configs/demo/vlm_demo_eval.yaml, which does not exist."""
    args = ran(run_script(tmp_path, "eval.sh", "eval_max_new_tokens=4", cuda=False))
    assert args[0].endswith("configs/demo/vlm_demo.yaml") and (REPO / "configs" / "demo" / "vlm_demo.yaml").is_file()
    assert "eval_max_new_tokens=4" in args
