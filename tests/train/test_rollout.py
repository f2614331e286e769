"""Rollout and scoring: the tokens scored are exactly the tokens generated, in all three scorings."""

import pytest
import torch

from dopd.train.scoring import gather_response
from dopd.train.trainer import DOPDTrainer
from dopd.train.workflow import run_train

from .test_train_e2e import make_config


def test_gather_response_packs_left_and_keeps_gradient():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3).requires_grad_()
    labels = torch.tensor([[-100, 7, 8, -100, -100], [-100, -100, 4, 5, 6]])
    packed, packed_labels = gather_response(hidden, labels)
    assert packed_labels.tolist() == [[7, 8, -100], [4, 5, 6]]
    assert torch.equal(packed[0, :2], hidden[0, 1:3]) and torch.equal(packed[1], hidden[1, 2:5])
    assert torch.equal(packed[0, 2], torch.zeros(3))
    packed.sum().backward()
    assert hidden.grad[0].sum(-1).tolist() == [0, 3, 3, 0, 0]


@pytest.mark.parametrize("family,dataset", [("qwen2", "llm_demo"), ("qwen2_vl", "vlm_demo")])
def test_scorings_see_the_generated_tokens(tmp_path, monkeypatch, family, dataset):
    generated, scored = [], []
    original_rollout, original_score = DOPDTrainer.rollout, DOPDTrainer._score

    def spy_rollout(self, model, samples):
        result = original_rollout(self, model, samples)
        generated.append([list(r) for r in result.responses])
        return result

    def spy_score(self, model, adapter, prompts, responses):
        packed, labels, head = original_score(self, model, adapter, prompts, responses)
        with torch.no_grad():
            greedy = head(packed)[..., : self.adapter.vocab_size].argmax(-1)
        scored.append((torch.is_grad_enabled(), [list(r) for r in responses], labels.clone(), greedy))
        return packed, labels, head

    monkeypatch.setattr(DOPDTrainer, "rollout", spy_rollout)
    monkeypatch.setattr(DOPDTrainer, "_score", spy_score)
    # greedy rollout: a deterministic student, so its own teacher-forced argmax must reproduce every token
    run_train(make_config(tmp_path, family=family, dataset=dataset, max_steps=2, temperature=0, save_steps=10))

    assert len(generated) == 2 and len(scored) == 6  # per step: student x, student x+p, teacher x+p
    for step, responses in enumerate(generated):
        for _, seen, labels, greedy in scored[3 * step: 3 * step + 3]:
            assert seen == responses
            for row, response in enumerate(responses):
                assert labels[row, : len(response)].tolist() == response
                assert (labels[row, len(response):] == -100).all()
        # the one scoring with gradient is the student on x: its argmax is the greedy rollout
        (_, _, labels, greedy), = [entry for entry in scored[3 * step: 3 * step + 3] if entry[0]]
        mask = labels.ne(-100)
        assert torch.equal(greedy[mask], labels[mask])


def test_vlm_answers_never_contain_vision_markers(tmp_path):
    from dopd.model import load_adapter
    from dopd.model.paths import resolve_model_path

    adapter = load_adapter(resolve_model_path("tiny:qwen2_vl:student", "student"))
    markers = set(adapter.suppressed_token_ids)
    assert {adapter.config.image_token_id, adapter.config.video_token_id} <= markers

    seen = []
    original = DOPDTrainer.rollout

    def spy(self, model, samples):
        result = original(self, model, samples)
        seen.extend(result.responses)
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DOPDTrainer, "rollout", spy)
        run_train(make_config(tmp_path, family="qwen2_vl", dataset="vlm_demo", max_steps=3, max_new_tokens=48,
                              save_steps=10))
    assert seen and not any(tok in markers for response in seen for tok in response)


def test_rollout_engine_is_pluggable(tmp_path):
    """A registered engine replaces HF generate: weights are pushed to it before every rollout, its answers are
    what the three scorings see, and `rollout/sequences_per_generate` follows its calls."""
    from dopd.train.rollout import EngineOutput, HFRolloutEngine, ROLLOUT_ENGINES, register_rollout_engine

    events = []

    class Recording(HFRolloutEngine):
        def update_weights(self, model):
            events.append("update")

        def generate(self, model, prompts, num_generations, rollout_args):
            events.append("generate")
            out = super().generate(model, prompts, num_generations, rollout_args)
            return EngineOutput(responses=out.responses, calls=4)

    register_rollout_engine("recording", Recording)
    try:
        result = run_train(make_config(tmp_path, max_steps=2, save_steps=10, rollout_engine="recording"))
    finally:
        ROLLOUT_ENGINES.pop("recording")
    assert events == ["update", "generate"] * 2
    logged = [r for r in result.log_history if "rollout/sequences_per_generate" in r]
    assert [r["rollout/sequences_per_generate"] for r in logged] == [1.0, 1.0]  # 2 prompts x G 2 over 4 calls
