"""`dopd-cli probe` (issue 23): the JSON contract on the demo configs (text, VLM, LoRA), the student-on-x accuracy
equal to `dopd-cli eval`, and the token section against a hand computation (teacher = student)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dopd.hparams import parse_config

REPO = Path(__file__).resolve().parents[2]
TEXT = str(REPO / "configs" / "demo" / "llm_demo.yaml")
VLM = str(REPO / "configs" / "demo" / "vlm_demo.yaml")
QUICK = ["probe_max_samples=4", "max_new_tokens=6", "eval_max_new_tokens=6", "disable_tqdm=true",
         "probe_lr_grid=1e-4,1e-2", f"dataset_dir={REPO / 'data'}"]


def _probe_cli(config: str, tmp_path: Path, *overrides: str) -> tuple[int, dict]:
    from dopd.cli import main

    out = tmp_path / "probe"
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", config, *QUICK, f"output_dir={tmp_path / 'run'}", f"probe_output_dir={out}", *overrides])
    with open(out / "probe_report.json", encoding="utf-8") as fh:
        return exit_info.value.code, json.load(fh)


def _check_contract(report: dict) -> None:
    for view in ("student_x", "student_xp", "teacher_x", "teacher_xp"):
        entry = report["accuracy"][view]
        assert set(entry) >= {"accuracy", "low", "high", "n"}
        assert 0.0 <= entry["low"] <= entry["accuracy"] <= entry["high"] <= 1.0 and entry["n"] == 4
    for regime in ("HT", "HS", "LH", "LL", "all"):
        assert set(report["tokens"][regime]) >= {"share", "teacher_rejected_frac", "priv_logp_gain"}
    shares = [report["tokens"][r]["share"] for r in ("HT", "HS", "LH", "LL")]
    assert math.isclose(sum(shares), 1.0, abs_tol=1e-6) and report["tokens"]["all"]["share"] == 1.0
    assert set(report["lr"]) >= {"grid", "suggested"}
    assert [row["lr"] for row in report["lr"]["grid"]] == [1e-4, 1e-2]
    assert all(isinstance(row["kl_change"], float) for row in report["lr"]["grid"])
    lowering = [row["lr"] for row in report["lr"]["grid"] if row["kl_change"] < 0]
    assert report["lr"]["suggested"] == (max(lowering) if lowering else None)
    checks = {c["check"]: c for c in report["verdict"]}
    assert set(checks) == {"p_helps_teacher", "p_helps_student", "teacher_better_than_student",
                           "rejected_tokens_reach_teacher"}
    for check in report["verdict"]:
        assert set(check) >= {"check", "holds", "detail"} and check["holds"] in (True, False, None)
    acc = report["accuracy"]
    assert checks["p_helps_student"]["holds"] == (acc["student_xp"]["accuracy"] > acc["student_x"]["accuracy"])


def test_probe_text_demo_follows_the_json_contract(tmp_path, capsys):
    code, report = _probe_cli(TEXT, tmp_path)
    assert code == 0
    _check_contract(report)
    out = capsys.readouterr().out
    assert "verdict:" in out and "p_helps_student" in out
    assert (tmp_path / "probe" / "probe_report.md").read_text().startswith("# DOPD probe")
    assert (tmp_path / "probe" / "probe_report.png").is_file()


def test_probe_strict_exits_3_when_a_check_fails(tmp_path):
    # random tiny models answer nothing right: p cannot help (0 -> 0 points), so the check fails
    code, report = _probe_cli(TEXT, tmp_path, "probe_strict=true", "probe_lr_grid=")
    assert report["lr"]["grid"] == [] and report["lr"]["suggested"] is None
    assert any(c["holds"] is False for c in report["verdict"])
    assert code == 3


def test_probe_vlm_demo_runs(tmp_path):
    code, report = _probe_cli(VLM, tmp_path, "probe_max_samples=4")
    assert code == 0
    _check_contract(report)


def test_probe_lora_config_runs(tmp_path):
    code, report = _probe_cli(TEXT, tmp_path, "finetuning_type=lora", "lora_rank=4")
    assert code == 0
    _check_contract(report)
    assert any(row["kl_change"] != 0.0 for row in report["lr"]["grid"])  # the LoRA step moved the student


def test_probe_student_accuracy_equals_dopd_cli_eval(tmp_path):
    """Same samples, same settings: the probe's student-on-x answers are `dopd-cli eval`'s, answer for answer."""
    from dopd.eval.workflow import run_eval

    _, report = _probe_cli(TEXT, tmp_path, "probe_lr_grid=", "eval_extractor=full")
    result, pred_path, _ = run_eval(TEXT, [f"dataset_dir={REPO / 'data'}", "eval_dataset=llm_demo", "max_samples=4",
                                          "eval_max_new_tokens=6", "eval_extractor=full",
                                          f"eval_output_dir={tmp_path / 'eval'}"])
    eval_rows = {r["uid"]: r for r in result.records}
    with open(tmp_path / "probe" / "predictions_student_x.jsonl", encoding="utf-8") as fh:
        probe_rows = {r["uid"]: r for r in map(json.loads, fh)}
    assert set(probe_rows) == set(eval_rows) and len(eval_rows) == 4
    for uid, row in probe_rows.items():
        assert row["predictions"] == eval_rows[uid]["predictions"] and row["correct"] == eval_rows[uid]["correct"]
    assert report["accuracy"]["student_x"]["accuracy"] == result.metrics["llm_demo/accuracy"]


def _logp(model, adapter, prompt, response) -> torch.Tensor:
    """log s(y_n | prompt, y<n) per response token, by a plain forward (not the trainer's scoring code)."""
    ids = torch.tensor([list(prompt.input_ids) + list(response)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :, :adapter.vocab_size].float()
    start = len(prompt.input_ids)
    logp = logits[start - 1:-1].log_softmax(-1)
    return logp.gather(1, torch.tensor(response).unsqueeze(1)).squeeze(1)


def test_token_section_matches_a_hand_computation_with_teacher_equal_to_student(tmp_path, tiny_model):
    """Teacher = the student's own weights, seeing x+p as the privileged student does: q_T = q_S on every token, so
    no token can be HS (q_T < q_S), and all/priv_logp_gain is the token mean of log S(y|x,p) - log S(y|x) and
    all/teacher_rejected_frac the share with S(y|x,p) < 0.1 and y not its argmax, both computed here by hand."""
    from dopd.data import load_and_validate
    from dopd.train.probe import probe_config, token_section
    from dopd.train.workflow import build_trainer

    student = tiny_model("qwen2", "student")
    cfg = probe_config(parse_config(TEXT, [*QUICK, f"model_name_or_path={student}",
                                           f"teacher_model_name_or_path={student}",
                                           f"output_dir={tmp_path / 'run'}", "per_device_train_batch_size=3"]))
    samples = load_and_validate(cfg.data, "llm_demo")[:4]
    trainer = build_trainer(cfg, samples)
    encoded = [trainer.train_dataset[i] for i in range(len(samples))]
    values, rollouts, records = token_section(trainer, encoded, seed=0)
    assert len(records) == 2  # two micro-batches (3 + 1 samples) combined by token weight

    gains, rejected = [], []
    for sample in encoded:
        for prompt, response in zip(*rollouts[id(sample)]):
            if not response:
                continue
            plain = _logp(trainer.model, trainer.adapter, sample.plain, response)
            priv = _logp(trainer.model, trainer.adapter, sample.privileged, response)
            gains.append(priv - plain)
            ids = torch.tensor([list(sample.privileged.input_ids) + list(response)])
            with torch.no_grad():
                logits = trainer.model(input_ids=ids).logits[0, :, :trainer.adapter.vocab_size]
            top = logits[len(sample.privileged.input_ids) - 1:-1].argmax(-1)
            rejected.append((priv.exp() < 0.1) & (top != torch.tensor(response)))
    gain = torch.cat(gains).mean().item()
    rejected_frac = torch.cat(rejected).float().mean().item()
    tokens = values["tokens"]
    assert tokens["HS"]["share"] == 0.0 and tokens["HS"]["priv_logp_gain"] is None
    assert tokens["all"]["priv_logp_gain"] == pytest.approx(gain, abs=1e-4)
    assert tokens["all"]["teacher_rejected_frac"] == pytest.approx(rejected_frac, abs=1e-6)
    assert sum(r["dopd/num_tokens"] for r in records) == sum(len(g) for g in gains)


def test_probe_text_only_teacher_reads_the_prompt_the_run_gives_it(tmp_path):
    """A text-only teacher of a VLM student (`teacher_text_only`): the probe's teacher evaluations read the text the
    trainer gives that teacher (image placeholders and images removed), not the raw view with `<image>` left in."""
    from dopd.data import load_dataset_samples
    from dopd.model import load_adapter
    from dopd.model.paths import resolve_model_path
    from dopd.train.dataset import PromptViewDataset

    overrides = ("teacher_model_name_or_path=tiny:qwen2:teacher", "teacher_text_only=true", "probe_lr_grid=",
                 "probe_max_samples=2")
    code, _ = _probe_cli(VLM, tmp_path, *overrides)
    assert code == 0
    cfg = parse_config(VLM, [*QUICK, *overrides])
    samples = load_dataset_samples(cfg.data, ["vlm_demo"])[:2]
    student = load_adapter(resolve_model_path(cfg.model.model_name_or_path, "student"), cfg.model)
    teacher = load_adapter(resolve_model_path(cfg.model.teacher_model_name_or_path, "teacher"), cfg.model)
    for view, sees_p in (("teacher_x", False), ("teacher_xp", True)):
        dataset = PromptViewDataset(samples, student, cfg.data, teacher_adapter=teacher, teacher_sees_privileged=sees_p)
        with open(tmp_path / "probe" / f"predictions_{view}.jsonl", encoding="utf-8") as fh:
            prompts = [json.loads(line)["prompt"] for line in fh]
        expected = [[m["content"] for m in dataset.views(i)[2].messages if m["role"] == "user"][-1]
                    for i in range(len(samples))]
        assert prompts == expected and not any("<image>" in p for p in prompts)


def test_probe_keeps_the_finished_parts_when_a_later_part_fails(tmp_path, monkeypatch):
    """A probe of a real pair runs for an hour: a crash in part 3 must not lose parts 1 and 2."""
    from dopd.cli import main
    from dopd.train import probe

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory in the lr check")

    monkeypatch.setattr(probe, "lr_part", crash)
    out = tmp_path / "probe"
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["probe", TEXT, *QUICK, f"output_dir={tmp_path / 'run'}", f"probe_output_dir={out}"])
    with open(out / "probe_report.partial.json", encoding="utf-8") as fh:
        partial = json.load(fh)
    assert partial["parts_done"] == ["accuracy", "tokens"]
    assert partial["accuracy"]["student_x"]["n"] == 4 and partial["tokens"]["all"]["share"] == 1.0
    assert "lr" not in partial and not (out / "probe_report.json").exists()


def test_probe_final_report_replaces_the_partial_one(tmp_path):
    code, report = _probe_cli(TEXT, tmp_path)
    assert code == 0 and report["parts_done"] == ["accuracy", "tokens", "lr"]
    assert not (tmp_path / "probe" / "probe_report.partial.json").exists()
