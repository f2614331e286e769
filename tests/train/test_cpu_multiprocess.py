"""`use_cpu: true` with several DeepSpeed processes (issue 11, item 9): the demo configs set use_cpu, and
`NPROC_PER_NODE=2 bash scripts/train_vlm_dopd.sh configs/demo/vlm_demo.yaml deepspeed=...` died in DeepSpeed's
batch-size check (`train_batch_size 4 != 2 * 1 * 1`)."""

import json

import pytest
import torch

from dopd.hparams import parse_config

from .test_deepspeed_cpu import REPO, launch, write_config


def test_use_cpu_is_resolved_for_multiprocess_deepspeed(monkeypatch):
    ds = str(REPO / "configs" / "deepspeed" / "ds_z3_config.json")
    monkeypatch.setenv("WORLD_SIZE", "2")
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    cfg = parse_config(None, ["use_cpu=true", f"deepspeed={ds}", "output_dir=/tmp/x"])
    assert cfg.training.use_cpu is False
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: the flag means what it says
    assert parse_config(None, ["use_cpu=true", "output_dir=/tmp/x"]).training.use_cpu is True


@pytest.mark.slow  # two DeepSpeed processes: ~1.5 min on 2 idle cores
def test_two_process_zero3_with_use_cpu(tmp_path):
    config, out = write_config(tmp_path, "z3_cpu", "qwen2", "llm_demo", use_cpu=True,
                               deepspeed=str(REPO / "configs" / "deepspeed" / "ds_z3_config.json"))
    launch(config, nproc=2, port=29631)
    checks = json.loads((out / "rank_checksums.json").read_text())
    assert len(checks["checksums"]) == 2 and checks["agree"], checks


@pytest.mark.parametrize("fails", [False, True], ids=["finished", "raised"])
def test_train_cli_destroys_the_process_group(tmp_path, monkeypatch, fails):
    """A finished two-rank ZeRO-3 run aborted at interpreter exit ('terminate called without an active exception',
    exit -6, once in .ci/run on 2026-12-05) with its process group left to the interpreter's teardown; the command
    destroys it itself, as LLaMA-Factory does, whether the run finished or raised."""
    import torch.distributed as dist

    from dopd.train import workflow

    def fake_run(cfg):
        if fails:
            raise RuntimeError("boom")
        return workflow.TrainResult(str(tmp_path), 2, [], [], None, 0)

    monkeypatch.setattr(workflow, "run_train", fake_run)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        if fails:
            with pytest.raises(RuntimeError, match="boom"):
                workflow.run_train_cli(None, ["model_name_or_path=tiny:llm", f"output_dir={tmp_path}"])
        else:
            assert workflow.run_train_cli(None, ["model_name_or_path=tiny:llm", f"output_dir={tmp_path}"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
