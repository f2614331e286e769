"""DeepSpeed ZeRO-2/3 with 2 processes on CPU (gloo), through the same launch script users run."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path, name, family, dataset, **overrides):
    config = {
        "model_name_or_path": f"tiny:{family}:student",
        "teacher_model_name_or_path": f"tiny:{family}:teacher",
        "dataset": dataset,
        "dataset_dir": str(REPO / "data"),
        "max_samples": 8,
        "num_generations": 2,
        "max_new_tokens": 8,
        "image_max_pixels": 12544,
        "image_min_pixels": 3136,
        "output_dir": str(tmp_path / name),
        "per_device_train_batch_size": 1,
        "max_steps": 2,
        "logging_steps": 1,
        "save_steps": 10,
        "learning_rate": 1.0e-3,
        "report_to": "none",
        "seed": 0,
        "disable_tqdm": True,
        "temperature": 0,  # greedy rollouts: runs with different process counts see the same answers
    }
    config.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, Path(config["output_dir"])


def launch(config_path, nproc, port, script="train_llm_dopd.sh"):
    env = {**os.environ, "NPROC_PER_NODE": str(nproc), "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / script), str(config_path)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def weights(output_dir):
    state = {}
    for f in sorted(Path(output_dir).glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


@pytest.mark.parametrize("zero,family,dataset,port", [
    ("ds_z2_config", "qwen2", "llm_demo", 29611),
    ("ds_z3_config", "qwen2", "llm_demo", 29612),
    ("ds_z2_config", "qwen2_vl", "vlm_demo", 29613),
    ("ds_z3_config", "qwen2_vl", "vlm_demo", 29614),
])
def test_two_process_deepspeed_ranks_agree(tmp_path, zero, family, dataset, port):
    config, out = write_config(tmp_path, zero, family, dataset,
                               deepspeed=str(REPO / "configs" / "deepspeed" / f"{zero}.json"))
    log = launch(config, nproc=2, port=port)
    assert "torchrun" in log.splitlines()[0]  # the script printed the resolved command first
    checks = json.loads((out / "rank_checksums.json").read_text())
    assert len(checks["checksums"]) == 2 and checks["agree"], checks
    steps = [json.loads(line) for line in open(out / "trainer_log.jsonl") if '"loss"' in line]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    assert weights(out), "no consolidated model was saved"


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    # the step as the unit (routing_scope step, across ranks, the defaults): 2 ranks x 2 accumulated micro-batches of
    # 1 prompt route and average over the same 4 prompts as 1 process with one micro-batch of 4
    two, out_two = write_config(tmp_path, "two", "qwen2", "llm_demo", gradient_accumulation_steps=2,
                                deepspeed=str(REPO / "configs" / "deepspeed" / "ds_z2_config.json"))
    one, out_one = write_config(tmp_path, "one", "qwen2", "llm_demo", per_device_train_batch_size=4)
    launch(two, nproc=2, port=29615)
    launch(one, nproc=1, port=29616)
    logs = {}
    for name, out in (("one", out_one), ("two", out_two)):
        logs[name] = [json.loads(line) for line in open(out / "trainer_log.jsonl") if '"loss"' in line]
    for key in ("loss", "dopd/threshold/gap", "dopd/threshold/q_s", "dopd/threshold/q_t"):
        assert [r[key] for r in logs["one"]] == pytest.approx([r[key] for r in logs["two"]], rel=1e-3, abs=1e-6), key
    a, b = weights(out_one), weights(out_two)
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff < 1e-4, diff
