"""Sampling for rollouts and eval comes from our settings alone (issue 11, items 2 and 3).

Real Qwen2/2.5(-VL) instruct checkpoints ship a generation_config.json with `repetition_penalty: 1.05` (and
`top_k: 1` for Qwen2.5-VL); transformers fills every setting not passed to `generate` from it. The stand-in here
is a tiny Qwen2 whose generation_config.json holds such values plus `epsilon_cutoff: 0.5`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from dopd.hparams import ConfigError, DataArguments, ModelArguments, RolloutArguments
from dopd.hparams.eval_args import EvalArguments
from dopd.model import load_adapter, load_model
from dopd.train.rollout import generation_kwargs
from dopd.train.workflow import run_train

from .test_train_e2e import make_config

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT_SAMPLING = {"do_sample": True, "repetition_penalty": 1.05, "top_k": 1, "top_p": 0.8,
                       "temperature": 0.7, "epsilon_cutoff": 0.5, "min_p": 0.2}


@pytest.fixture(scope="module")
def opinionated_checkpoint(tiny_model, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("gen_config") / "qwen2-student"
    shutil.copytree(tiny_model("qwen2", "student"), out)
    path = out / "generation_config.json"
    config = json.loads(path.read_text())
    config.update(CHECKPOINT_SAMPLING)
    path.write_text(json.dumps(config))
    return str(out)


def _effective_configs(model, monkeypatch) -> list:
    """Record the GenerationConfig transformers actually runs with (after filling from the checkpoint)."""
    seen = []
    original = type(model).generate

    def spy(self, *args, **kwargs):
        config, _ = self._prepare_generation_config(kwargs.get("generation_config"), **{
            k: v for k, v in kwargs.items() if k not in ("generation_config", "input_ids", "attention_mask",
                                                         "logits_processor", "stopping_criteria")})
        seen.append(config)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "generate", spy)
    return seen


def test_eval_samples_are_not_collapsed_by_the_checkpoint(opinionated_checkpoint, monkeypatch, caplog) -> None:
    from dopd.data import load_dataset_samples
    from dopd.eval.workflow import generate_records

    args = ModelArguments(torch_dtype="float32")
    adapter = load_adapter(opinionated_checkpoint, args)
    model = load_model(opinionated_checkpoint, args, adapter=adapter)
    seen = _effective_configs(model, monkeypatch)
    data_args = DataArguments(dataset="llm_demo", dataset_dir=str(REPO / "data"), cutoff_len=512)
    samples = load_dataset_samples(data_args, ["llm_demo"])[:2]
    eval_args = EvalArguments(eval_num_samples=4, eval_temperature=1.0, eval_max_new_tokens=8)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        records = generate_records(model, adapter, samples, data_args, eval_args)
    assert all(len(set(r["predictions"])) > 1 for r in records), [r["predictions"] for r in records]
    (config,) = seen
    assert config.do_sample and config.temperature == 1.0 and config.top_p == 1.0
    assert config.top_k in (0, None) and config.repetition_penalty == 1.0 and config.min_p is None
    assert not config.epsilon_cutoff and not config.eta_cutoff and config.typical_p in (1.0, None)
    assert set(config.eos_token_id) == set(adapter.stop_token_ids) and config.pad_token_id == adapter.pad_token_id
    # the effective settings are logged once, with what the checkpoint's file asked for and was ignored
    assert "repetition_penalty=1.05" in caplog.text and "epsilon_cutoff=0.5" in caplog.text
    assert model.generation_config.repetition_penalty == 1.05  # the model's own config is left as it was


def test_rollout_uses_exactly_our_settings(opinionated_checkpoint, monkeypatch) -> None:
    args = ModelArguments(torch_dtype="float32")
    adapter = load_adapter(opinionated_checkpoint, args)
    model = load_model(opinionated_checkpoint, args, adapter=adapter)
    seen = _effective_configs(model, monkeypatch)
    from dopd.data.views import PromptView

    prompt = adapter.encode_prompt(PromptView(messages=[{"role": "user", "content": "Count to three."}]))
    for rollout, expect in ((RolloutArguments(max_new_tokens=4), dict(temperature=1.0, top_p=1.0, top_k=0)),
                            (RolloutArguments(max_new_tokens=4, temperature=0.6, top_p=0.9, top_k=20),
                             dict(temperature=0.6, top_p=0.9, top_k=20))):
        adapter.generate_with_logprobs(model, adapter.collate_prompts([prompt, prompt]), **generation_kwargs(rollout))
        config = seen[-1]
        assert config.do_sample and config.repetition_penalty == 1.0 and config.min_p is None
        assert not config.epsilon_cutoff and config.max_new_tokens == 4
        assert {k: getattr(config, k) for k in expect} == expect
    adapter.generate(model, adapter.collate_prompts([prompt]), **generation_kwargs(RolloutArguments(temperature=0)))
    assert seen[-1].do_sample is False and seen[-1].repetition_penalty == 1.0


@pytest.mark.parametrize("overrides,problem", [
    ({"top_p": 0.9}, "top_p=0.9"),
    ({"top_k": 20}, "top_k=20"),
    ({"temperature": 0.7}, "distill_temperature=1.0"),
    ({"temperature": 0}, "temperature=0"),
    ({"repetition_penalty": 1.05}, "repetition_penalty=1.05"),
])
def test_sampled_rkl_refuses_mismatched_rollouts_before_loading(tmp_path, overrides, problem) -> None:
    cfg = make_config(tmp_path, stage="vanilla_opd", model_name_or_path="/nonexistent/student",
                      teacher_model_name_or_path="/nonexistent/teacher", **overrides)
    with pytest.raises(ConfigError, match="sampled_rkl") as err:
        run_train(cfg)
    assert problem in str(err.value)


def test_sampled_rkl_accepts_matching_rollouts_and_other_presets(tmp_path) -> None:
    ok = [make_config(tmp_path, stage="vanilla_opd", temperature=0.7, distill_temperature=0.7),
          make_config(tmp_path, stage="dopd", top_p=0.9, temperature=0.7)]
    for cfg in ok:
        cfg = cfg._replace(model=ModelArguments(model_name_or_path="/nonexistent/student",
                                                teacher_model_name_or_path="/nonexistent/teacher"))
        with pytest.raises(ConfigError) as err:  # gets as far as loading the (missing) model
            run_train(cfg)
        assert "sampled_rkl" not in str(err.value) and "/nonexistent" in str(err.value)
