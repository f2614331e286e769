"""The step's rollout in one large generate call samples what per-micro-batch calls would: greedy answers are equal
whatever the split (`rollout_batch_size`), and the sampled tokens' log-probs at generation equal the teacher-forced
ones (what the scorings see)."""

from types import SimpleNamespace

import pytest
import torch

from dopd.data.views import PromptView
from dopd.model import load_adapter, load_model
from dopd.train.rollout import HFRolloutEngine, per_call_sequences


class _Accelerator:  # what model_for_generation needs of accelerate's Accelerator, without DeepSpeed
    state = SimpleNamespace(deepspeed_plugin=None)

    @staticmethod
    def unwrap_model(model):
        return model


def _setup(tiny_model):
    path = tiny_model("qwen2", "student")
    adapter = load_adapter(path)
    model = load_model(path, adapter=adapter, role="student").float()
    questions = ["What is 2 + 3?", "Name a colour.", "Count to five, please, slowly and clearly.", "Hi",
                 "Why is the sky blue? Answer briefly.", "Add 7 and 8."]
    prompts = [adapter.encode_prompt(PromptView(messages=[{"role": "user", "content": q}], images=[]), 256)
               for q in questions]
    return adapter, model, prompts


def _args(**kw):
    base = dict(num_generations=2, max_new_tokens=8, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                rollout_batch_size=0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_per_call_sequences_keeps_whole_prompts():
    assert per_call_sequences(4, 4, 0) == 16 and per_call_sequences(4, 4, 100) == 16
    assert per_call_sequences(4, 4, 9) == 8 and per_call_sequences(4, 4, 3) == 4


def test_greedy_answers_do_not_depend_on_the_call_size(tiny_model):
    adapter, model, prompts = _setup(tiny_model)
    engine = HFRolloutEngine(adapter, _Accelerator(), torch.device("cpu"))
    whole = engine.generate(model, prompts, 2, _args())
    assert whole.calls == 1 and len(whole.responses) == 12
    split = engine.generate(model, prompts, 2, _args(rollout_batch_size=4))
    assert split.calls == 3
    alone = [r for p in prompts for r in engine.generate(model, [p], 2, _args()).responses]
    assert whole.responses == split.responses == alone
    assert all(whole.responses[2 * i] == whole.responses[2 * i + 1] for i in range(6))  # greedy: G equal answers


def test_sampled_logprobs_at_generation_equal_teacher_forced_in_a_large_batch(tiny_model):
    adapter, model, prompts = _setup(tiny_model)
    rows = [p for p in prompts for _ in range(4)]  # the step's call: every prompt x G 4, left-padded together
    torch.manual_seed(0)
    responses, gen_logps = adapter.generate_with_logprobs(
        model, adapter.collate_prompts(rows), max_new_tokens=8, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    batch, labels = adapter.build_scoring_batch(rows, responses)
    with torch.no_grad():
        logps = adapter.forward_logits(model, batch).float().log_softmax(-1)
    for b in range(len(rows)):
        mask = labels[b] != -100
        got = logps[b][mask].gather(-1, labels[b][mask][:, None])[:, 0]
        torch.testing.assert_close(got, torch.tensor(gen_logps[b]), rtol=0, atol=1e-4)
    assert len({tuple(r) for r in responses}) > len(prompts)  # sampled: a prompt's answers differ
