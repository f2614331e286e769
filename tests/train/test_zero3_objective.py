"""ZeRO-3, 2 processes on CPU (gloo): the objective from hidden states with the lm_heads gathered once per loss
(`dopd.train.distributed.gathered_parameters`, held through the backward as DOPDTrainer does) gives the same loss
and the same (reduced, partitioned) gradients as the logits path, where the head is called as a module and the
objective runs on [B, T, V] logits. Without the gather held through the backward, autograd cannot accumulate the
[V, H] weight gradient into the partitioned parameter (a shape error)."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

V, H = 96, 32


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank):
    g = torch.Generator().manual_seed(10 + rank)
    ids = torch.randint(0, V, (2, 9), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, 3:8] = torch.randint(0, V, (2, 5), generator=g)  # positions 3..7 predict the response tokens
    labels[1, 6:] = -100
    priv_ids = torch.randint(0, V, (2, 9), generator=g)
    teacher_hidden = torch.randn(2, 9, H, generator=g)
    return ids, priv_ids, labels, teacher_hidden


def _worker(rank, port, out_dir, aggregation):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import deepspeed
    from deepspeed.utils import safe_get_full_grad
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dopd.distill import DOPDLossConfig, dopd_loss, dopd_loss_from_hidden
    from dopd.train.distributed import gathered_parameters

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    teacher_head = torch.nn.Linear(H, V, bias=False)  # replicated (same seed on both ranks), frozen
    teacher_head.requires_grad_(False)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
              "optimizer": {"type": "SGD", "params": {"lr": 0.0}}, "zero_allow_untested_optimizer": True}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    cfg = DOPDLossConfig(distill_top_k=8, loss_aggregation=aggregation, routing_scope="global")
    ids, priv_ids, labels, teacher_hidden = _batch(rank)
    base = engine.module
    head = base.get_output_embeddings()
    results = {}
    for path in ("logits", "hidden"):
        with torch.no_grad():
            hidden_p = base.model(input_ids=priv_ids).last_hidden_state
        hidden = base.model(input_ids=ids).last_hidden_state
        if path == "logits":
            with torch.no_grad():
                logits_p, logits_t = head(hidden_p), teacher_head(teacher_hidden)
            out = dopd_loss(head(hidden), logits_p, logits_t, labels, cfg)
            engine.backward(out.loss)
        else:
            # the head stays gathered until the backward has handed its weight gradient to DeepSpeed (the loss
            # computes it in its forward; autograd accumulates it into the parameter, which must then be whole)
            with gathered_parameters(head, teacher_head):
                assert head.weight.shape == (V, H)  # whole inside the block
                out = dopd_loss_from_hidden(hidden, hidden_p, teacher_hidden, labels, head, teacher_head, cfg,
                                            chunk_size=3)
                engine.backward(out.loss)
            assert head.weight.numel() < V * H  # partitioned again after the block
        grads = {name: safe_get_full_grad(p).clone() for name, p in base.named_parameters()
                 if name in ("lm_head.weight", "model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight")}
        results[path] = {"loss": float(out.loss.detach()), "grads": grads,
                         "gap": out.metrics["threshold/gap"]}
        engine.optimizer.zero_grad()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.parametrize("aggregation", ["sequence"])
def test_zero3_hidden_state_objective_equals_logits_path(tmp_path, aggregation):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), aggregation), nprocs=2, join=True)
    for rank in range(2):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        logits, hidden = res["logits"], res["hidden"]
        assert hidden["loss"] == pytest.approx(logits["loss"], rel=1e-5)
        assert hidden["gap"] == pytest.approx(logits["gap"], rel=1e-6)
        for name, grad in logits["grads"].items():
            assert grad.abs().max() > 0, name
            torch.testing.assert_close(hidden["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
