"""`dopd-cli eval` end to end on the bundled demo data with tiny models, and the pieces the trainer calls."""

import json
from pathlib import Path

import pytest
import torch

from dopd.eval.workflow import EvalResult, evaluate_samples, format_table, summarize, write_outputs
from dopd.hparams import ConfigError, parse_config
from dopd.hparams.eval_args import EvalArguments

REPO = Path(__file__).resolve().parents[2]


def _write_config(tmp_path: Path, **keys) -> str:
    path = tmp_path / "eval.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in keys.items()) + "\n", encoding="utf-8")
    return str(path)


def _run_cli(config: str, *overrides: str) -> int:
    from dopd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", config, *overrides])
    return exit_info.value.code


def test_eval_keys_parse_and_reject_typos():
    cfg = parse_config(None, ["eval_num_samples=4", "eval_with_privilege=true", "eval_pass_k=1,2"],
                       with_training=False)
    assert cfg.evaluation.eval_num_samples == 4 and cfg.evaluation.eval_with_privilege is True
    with pytest.raises(ConfigError, match="eval_num_samples"):
        parse_config(None, ["eval_num_sample=4"], with_training=False)


def test_cli_eval_text_demo(tmp_path, tiny_model, capsys):
    config = _write_config(
        tmp_path, model_name_or_path=tiny_model("qwen2"), torch_dtype="float32", eval_dataset="llm_demo",
        dataset_dir=str(REPO / "data"), max_samples=5, eval_max_new_tokens=6, eval_generation_batch_size=3,
        output_dir=str(tmp_path / "out"), use_cpu=True,
    )
    assert _run_cli(config) == 0
    out = capsys.readouterr().out
    assert "llm_demo" in out and "accuracy" in out
    records = [json.loads(line) for line in (tmp_path / "out" / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 5
    first = records[0]
    assert {"uid", "prompt", "reference", "prediction", "predictions", "extracted", "correct"} <= set(first)
    assert first["uid"] == "llm_demo:0" and first["reference_answer"] == "12" and first["privileged_view"] is False
    metrics = json.loads((tmp_path / "out" / "eval_metrics.json").read_text())
    assert metrics["metrics"]["llm_demo/num_prompts"] == 5
    assert 0.0 <= metrics["metrics"]["llm_demo/accuracy"] <= 1.0
    assert metrics["settings"]["view"] == "plain" and metrics["settings"]["do_sample"] is False


def test_cli_eval_vlm_privileged_sampled(tmp_path, tiny_model):
    config = _write_config(
        tmp_path, model_name_or_path=tiny_model("qwen2_vl"), torch_dtype="float32", dataset="vlm_demo",
        dataset_dir=str(REPO / "data"), max_samples=3, eval_max_new_tokens=4, image_min_pixels=3136,
        image_max_pixels=50176, use_cpu=True,
    )
    out_dir = tmp_path / "vlm_out"
    code = _run_cli(config, "eval_num_samples=2", "eval_with_privilege=true", f"eval_output_dir={out_dir}",
                    "predictions_file=preds.jsonl")
    assert code == 0
    records = [json.loads(line) for line in (out_dir / "preds.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["predictions"]) == 2 for r in records)
    assert any(r["privileged_view"] for r in records)
    assert "[Privileged regions]" in records[0]["prompt"]
    metrics = json.loads((out_dir / "eval_metrics.json").read_text())["metrics"]
    assert {"vlm_demo/pass@1", "vlm_demo/pass@2", "vlm_demo/mean@2"} <= set(metrics)


def test_evaluate_samples_restores_mode_and_rng(tiny_model):
    from dopd.data import load_dataset_samples
    from dopd.hparams import DataArguments
    from dopd.model import load_adapter, load_model

    path = tiny_model("qwen2")
    adapter = load_adapter(path)
    model = load_model(path, adapter=adapter)
    model.train()
    data_args = DataArguments(dataset_dir=str(REPO / "data"), max_samples=2)
    samples = load_dataset_samples(data_args, ["llm_demo"])
    eval_args = EvalArguments(eval_num_samples=2, eval_max_new_tokens=5, eval_seed=3)
    state = torch.get_rng_state()
    first = evaluate_samples(model, adapter, samples, data_args, eval_args)
    assert model.training and torch.equal(state, torch.get_rng_state())
    second = evaluate_samples(model, adapter, samples, data_args, eval_args)
    assert [r["predictions"] for r in first.records] == [r["predictions"] for r in second.records]
    assert set(first.metrics) >= {"llm_demo/accuracy", "llm_demo/pass@2", "average/accuracy"}


def _record(dataset, correct, extracted=None):
    return {"uid": f"{dataset}:0", "dataset": dataset, "predictions": ["x"] * len(correct), "correct": correct,
            "extracted": extracted or ["x"] * len(correct), "reference_answer": "1"}


def test_summarize_table_and_outputs(tmp_path):
    records = [_record("a", [True, False]), _record("a", [False, False], [None, "2"]), _record("b", [True, True])]
    args = EvalArguments(eval_num_samples=2)
    metrics = summarize(records, args)
    assert metrics["a/accuracy"] == 0.25 and metrics["b/accuracy"] == 1.0
    assert metrics["a/pass@2"] == 0.5 and metrics["a/no_answer"] == 0.25
    assert metrics["average/accuracy"] == pytest.approx(0.625)  # unweighted over datasets
    table = format_table(metrics)
    lines = table.splitlines()
    assert lines[0].split() == ["dataset", "n", "accuracy", "pass@1", "pass@2", "mean@2"]
    assert lines[2].split()[:3] == ["a", "2", "25.0"] and lines[-1].split()[0] == "average"
    pred, met = write_outputs(EvalResult(metrics, records), str(tmp_path), args, {"view": "plain"})
    assert len(Path(pred).read_text().splitlines()) == 3
    assert json.loads(Path(met).read_text())["per_dataset"]["b"]["accuracy"] == 1.0


def test_missing_dataset_is_a_config_error(tmp_path):
    from dopd.eval.workflow import run_eval

    with pytest.raises(ConfigError, match="no dataset to evaluate"):
        run_eval(None, ["model_name_or_path=tiny:qwen2"])
