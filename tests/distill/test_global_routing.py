"""routing_scope=global: thresholds from the tokens of every rank (2 CPU processes, gloo)."""


import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dopd.distill import DOPDLossConfig, compute_thresholds, dopd_loss


def _data(rank):
    g = torch.Generator().manual_seed(100 + rank)
    T = 5 + 4 * rank  # ranks hold different numbers of tokens
    return [torch.randn(1, T, 20, generator=g) * 2 for _ in range(3)] + [torch.randint(0, 20, (1, T), generator=g)]


def _worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        s, p, t, labels = _data(rank)
        out = dopd_loss(s, p, t, labels, DOPDLossConfig(distill_top_k=4, routing_scope="global"))
        if rank == 0:
            torch.save({k: out.metrics[k] for k in ("threshold/gap", "threshold/q_s", "threshold/q_t")}, out_file)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_global_thresholds_pool_every_rank(tmp_path):
    out_file = str(tmp_path / "thr.pt")
    mp.spawn(_worker, args=(str(tmp_path / "init"), out_file), nprocs=2, join=True)
    got = torch.load(out_file)
    lq = {"s": [], "t": []}
    for rank in range(2):
        s, p, t, labels = _data(rank)
        lab = labels.unsqueeze(-1)
        lq["s"].append(torch.log_softmax(p, -1).gather(-1, lab).flatten())
        lq["t"].append(torch.log_softmax(t, -1).gather(-1, lab).flatten())
    pooled = compute_thresholds(torch.cat(lq["s"]), torch.cat(lq["t"]), 0.05)
    local = compute_thresholds(lq["s"][0], lq["t"][0], 0.05)
    assert abs(got["threshold/gap"] - pooled.gap) < 1e-5 and abs(got["threshold/q_s"] - pooled.q_s) < 1e-6
    assert abs(got["threshold/q_t"] - pooled.q_t) < 1e-6
    assert abs(pooled.gap - local.gap) > 1e-3  # the test distinguishes pooled from local statistics
