"""One trainer builder: `run_train` and the benchmarks build the DOPDTrainer through `build_trainer`, so the
benchmarks measure what users run."""

import dopd.train.workflow as workflow
from dopd.model import load_adapter
from dopd.model.paths import resolve_model_path
from dopd.train.trainer import DOPDTrainer

from .test_train_e2e import make_config


def _spy(monkeypatch):
    calls = []
    real = workflow.build_trainer

    def spy(cfg, samples, eval_samples=None, **kw):
        trainer = real(cfg, samples, eval_samples, **kw)
        calls.append((cfg, kw, trainer))
        return trainer

    monkeypatch.setattr(workflow, "build_trainer", spy)
    return calls


def test_run_train_builds_through_build_trainer(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    result = workflow.run_train(make_config(tmp_path, max_steps=1, save_steps=10))
    assert result.global_step == 1 and len(calls) == 1
    trainer = calls[0][2]
    assert isinstance(trainer, DOPDTrainer) and trainer.graceful_stop and trainer.nonfinite_guard


def test_benchmarks_build_through_build_trainer(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    from benchmarks.lib import data as bench_data, trainers as bench_trainers

    cfg = make_config(tmp_path, max_steps=1)
    student_dir = resolve_model_path(cfg.model.model_name_or_path, "student")
    teacher_dir = resolve_model_path(cfg.model.teacher_model_name_or_path, "teacher")
    from transformers import AutoModelForCausalLM

    student, teacher = (AutoModelForCausalLM.from_pretrained(d) for d in (student_dir, teacher_dir))
    samples = bench_data.make_samples("qwen2", 2, 8, 4, None)
    trainer = bench_trainers.make_dopd_trainer(cfg, student, teacher, samples)
    assert len(calls) == 1 and calls[0][1] == {"student": student, "teacher": teacher}
    assert trainer.model is student and trainer.teacher is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert type(trainer.adapter) is type(load_adapter(student_dir))
