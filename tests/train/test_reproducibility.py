"""Same config, same seed, same CPU -> the same run, whatever the process did before the models were built.

What differs between two same-seed runs must come from the config alone. Two things looked like non-determinism and
were not: (1) `max_steps` changes every update after the first through the cosine (or linear) schedule, so runs of
different lengths agree on the first two logged losses and then part (`max_steps=8` vs `12` on the VLM demo:
identical steps 1-2, different from step 3 on); (2) weights a run initialises itself (LoRA's A matrices, drawn by
peft when the model is wrapped) came from whatever state the global RNG was in at that moment, because the Trainer
seeds only when it is constructed, after the models. `build_trainer` now seeds first.
"""

import torch

from dopd.train.workflow import build_trainer, run_train

from .test_train_e2e import make_config


def _lora_a(cfg):
    from dopd.data import load_and_validate

    trainer = build_trainer(cfg, load_and_validate(cfg.data, cfg.data.dataset))
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_A" in n}


def test_lora_init_follows_the_seed_not_the_rng_state_before(tmp_path):
    torch.manual_seed(123)  # e.g. tiny models built in this process first, or anything else drawing numbers
    first = _lora_a(make_config(tmp_path, finetuning_type="lora", seed=1))
    torch.rand(17)
    again = _lora_a(make_config(tmp_path, finetuning_type="lora", seed=1))
    other = _lora_a(make_config(tmp_path, finetuning_type="lora", seed=2))
    assert first and all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_same_seed_runs_log_identical_losses(tmp_path):
    losses = []
    for i, disturb in enumerate((0, 99)):
        torch.manual_seed(disturb)  # the global RNG state before the run must not matter
        cfg = make_config(tmp_path / str(i), finetuning_type="lora", lora_rank=4, max_steps=4, save_steps=100,
                          learning_rate=1e-2, seed=3)
        result = run_train(cfg)
        losses.append([r["loss"] for r in result.log_history if "loss" in r])
    assert len(losses[0]) == 4
    assert losses[0] == losses[1]  # exactly: same seed, same CPU, same thread count
