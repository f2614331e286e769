"""The optimizer step as the unit (routing_scope: step): one rollout per step, routing statistics and the loss mean
over the whole step, whatever its split into micro-batches; resume keeps the step and the data order."""

import pytest

from dopd.train.trainer import DOPDTrainer
from dopd.train.workflow import run_train

from .test_train_e2e import make_config, read_log

STATS = ("dopd/threshold/gap", "dopd/threshold/q_s", "dopd/threshold/q_t")


def _one_step(tmp_path, name, batch, accumulation, **overrides):
    # greedy rollouts: the same answers whatever the split (all 4 prompts go to one generate call either way)
    cfg = make_config(tmp_path, output_dir=str(tmp_path / name), per_device_train_batch_size=batch,
                      gradient_accumulation_steps=accumulation, max_steps=1, save_steps=10, temperature=0,
                      num_generations=2, **overrides)
    run_train(cfg)
    (log,) = [r for r in read_log(cfg.training.output_dir) if "loss" in r]
    return log


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_step_statistics_and_loss_do_not_depend_on_the_micro_batch_split(tmp_path, aggregation):
    whole = _one_step(tmp_path, "1x4", 4, 1, loss_aggregation=aggregation)
    split = _one_step(tmp_path, "4x1", 1, 4, loss_aggregation=aggregation)
    for key in STATS:
        assert split[key] == pytest.approx(whole[key], rel=1e-4), key
    # gradient accumulation keeps the loss scale: the step's loss and gradient, not a sum or a mean of means
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-4)
    assert split["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-3)
    assert split["rollout/sequences_per_generate"] == whole["rollout/sequences_per_generate"] == 8
    assert split["rollout/response_length"] == pytest.approx(whole["rollout/response_length"])


def test_micro_batch_scope_routes_each_micro_batch_on_its_own(tmp_path):
    whole = _one_step(tmp_path, "1x4", 4, 1, routing_scope="micro_batch")
    split = _one_step(tmp_path, "4x1", 1, 4, routing_scope="micro_batch")
    assert split["rollout/sequences_per_generate"] == 2  # one generate per micro-batch of 1 prompt x G 2
    assert whole["rollout/sequences_per_generate"] == 8
    assert split["dopd/threshold/gap"] != pytest.approx(whole["dopd/threshold/gap"], rel=1e-3)


def test_rollout_batch_size_splits_the_step_rollout(tmp_path):
    log = _one_step(tmp_path, "rbs", 1, 4, rollout_batch_size=5)  # rounded down to whole prompts: 2 x G 2
    assert log["rollout/sequences_per_generate"] == 4


def test_resume_mid_run_continues_at_the_same_step_and_data_order(tmp_path, monkeypatch):
    seen: list[tuple[str, int, list[str]]] = []
    original = DOPDTrainer.rollout

    def spy(self, model, samples):
        seen.append((self.args.output_dir, self.state.global_step, [s.uid for s in samples]))
        return original(self, model, samples)

    monkeypatch.setattr(DOPDTrainer, "rollout", spy)
    common = dict(per_device_train_batch_size=1, gradient_accumulation_steps=2, max_samples=8)
    full = make_config(tmp_path, output_dir=str(tmp_path / "full"), max_steps=3, save_steps=2, **common)
    run_train(full)
    resumed = make_config(tmp_path, output_dir=str(tmp_path / "resumed"), max_steps=3, save_steps=10,
                          resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"), **common)
    result = run_train(resumed)
    assert result.global_step == 3
    assert [r["step"] for r in read_log(tmp_path / "resumed") if "loss" in r] == [3]
    by_run = {}
    for out, step, uids in seen:
        by_run.setdefault(out, []).append((step, uids))
    full_steps, resumed_steps = by_run[str(tmp_path / "full")], by_run[str(tmp_path / "resumed")]
    assert [s for s, _ in full_steps] == [0, 1, 2] and all(len(u) == 2 for _, u in full_steps)  # one rollout/step
    assert resumed_steps == [full_steps[2]]  # step 3 (global_step 2 before it), the same two samples in order


@pytest.mark.parametrize("cache", ["device", "none"])
def test_the_routing_pass_runs_once_per_token_per_step(tmp_path, monkeypatch, cache):
    """The step's statistics and each micro-batch's loss share one pass 1 (log q_S, log q_T of the sampled
    tokens): each target's lm_head is applied to every sampled token once per step, not twice."""
    import dopd.distill.passes as passes

    rows_seen: list[int] = []
    original = passes.sampled_logprobs

    def spy(row_fn, labels, chunk):
        rows_seen.append(labels.numel())
        return original(row_fn, labels, chunk)

    monkeypatch.setattr(passes, "sampled_logprobs", spy)
    log = _one_step(tmp_path, f"once_{cache}", 1, 2, step_score_cache=cache)
    sampled_tokens = round(log["rollout/response_length"] * 2 * 2)  # 2 prompts x G 2 answers
    assert sum(rows_seen) == 2 * sampled_tokens  # q_S and q_T, once each
