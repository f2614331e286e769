"""Per-token gradients at the start of DOPD (issue 24's H1 and H2), on a testbed work folder's SFT models.

The trainer runs `--steps` DOPD steps at learning rate 0 (the student does not move; each step rolls out new
answers), and every call of the objective is captured (hidden states, lm_heads, labels, the regimes it routed).
From those, per valid token, with s the student's distribution, S_p the privileged student's, T the teacher's:

- H2 (does the full-vocabulary JS saturate on HT tokens?): the L2 norm of d/dz of JS(s, T) and of KL(s || T) wrt
  the token's student logits z, on the tokens routed to HT;
- H1 (does DOPD stop correcting rejected tokens?): on HS tokens the teacher rejects (q_T < 0.1, not its top
  choice), the first-order change of log s(y) per unit gradient-descent step on z (`logp_step_direction`; < 0:
  lowered) under the HS term of the paper's table (beta_l * top-K RKL to S_p), the same term to the teacher, and
  vanilla OPD's sampled-token term to the teacher.

    python -m benchmarks.privilege_illusion.gradient_probe --work saves/testbed_confirm --seeds 3,4,5 [--steps 4]

Writes results/testbed_gradient_probe.json (or --json) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..paths import REPO, TESTBED_GRADIENT_PROBE


def _capture(cfg: Any, data: str, seed: int, student: str, teacher: str, out: str) -> list[dict[str, Any]]:
    import dopd.distill as distill_mod

    from .pipeline import Method, _cleanup_weights, distill

    calls: list[dict[str, Any]] = []
    original = distill_mod.dopd_loss_from_hidden

    def spy(hidden_s, hidden_p, hidden_t, labels, head_s, head_t, *args, **kwargs):
        result = original(hidden_s, hidden_p, hidden_t, labels, head_s, head_t, *args, **kwargs)
        calls.append({"h_s": hidden_s.detach().clone(), "h_p": hidden_p.detach().clone(),
                      "h_t": hidden_t.detach().clone(), "labels": labels.detach().clone(),
                      "w_s": head_s.weight.detach().clone(), "w_t": head_t.weight.detach().clone(),
                      "vocab": kwargs.get("vocab_size"), "regimes": result.regimes.detach().clone()})
        return result

    distill_mod.dopd_loss_from_hidden = spy
    try:
        distill(replace(cfg, distill_lr=0.0, eval_every=10 ** 9), data, seed, Method("dopd", "dopd"), student,
                teacher, out)
    finally:
        distill_mod.dopd_loss_from_hidden = original
    _cleanup_weights(out)
    return calls


def _per_token(calls: list[dict[str, Any]], beta_l: float = 0.6, top_k: int = 128) -> dict[str, Any]:
    import torch

    from dopd.distill.diagnostics import logp_step_direction
    from dopd.distill.divergences import divergence
    from dopd.distill.routing import HS, HT

    ht_js, ht_rkl = [], []
    steps = {"hs_term_to_priv": [], "same_term_to_teacher": [], "vanilla_sampled_to_teacher": []}
    counts = {"tokens": 0, "ht": 0, "hs": 0, "hs_rejected": 0}
    for c in calls:
        valid = c["labels"] != -100
        v = c["vocab"] or c["w_s"].shape[0]
        labels = c["labels"][valid]
        regimes = c["regimes"][valid]
        z_s = c["h_s"][valid].float() @ c["w_s"][:v].float().T
        lp_p = torch.log_softmax(c["h_p"][valid].float() @ c["w_s"][:v].float().T, -1)
        lp_t = torch.log_softmax(c["h_t"][valid].float() @ c["w_t"][:v].float().T, -1)
        counts["tokens"] += int(labels.numel())
        ht = regimes == HT
        counts["ht"] += int(ht.sum())
        if bool(ht.any()):
            for name, sink in (("js", ht_js), ("rkl", ht_rkl)):
                z = z_s[ht].clone().requires_grad_(True)
                val = divergence(name, torch.log_softmax(z, -1), lp_t[ht])
                (g,) = torch.autograd.grad(val.sum(), z)
                sink += g.norm(dim=-1).tolist()
        q_t = lp_t.gather(1, labels.unsqueeze(1)).squeeze(1).exp()
        rejected = (q_t < 0.1) & (lp_t.argmax(-1) != labels)
        hs = regimes == HS
        counts["hs"] += int(hs.sum())
        sel = hs & rejected
        counts["hs_rejected"] += int(sel.sum())
        if not bool(sel.any()):
            continue
        for key, (div, target, weight) in {"hs_term_to_priv": ("rkl_topk", lp_p, beta_l),
                                           "same_term_to_teacher": ("rkl_topk", lp_t, beta_l),
                                           "vanilla_sampled_to_teacher": ("sampled_rkl", lp_t, 1.0)}.items():
            s_logp = torch.log_softmax(z_s[sel], -1).detach().requires_grad_(True)
            val = weight * divergence(div, s_logp, target[sel], labels[sel], top_k=top_k)
            (g,) = torch.autograd.grad(val.sum(), s_logp)
            steps[key] += logp_step_direction(s_logp.detach(), g, labels[sel]).tolist()

    def summary(xs: list[float]) -> dict[str, float]:
        return {"n": len(xs), "mean": statistics.fmean(xs) if xs else float("nan"),
                "median": statistics.median(xs) if xs else float("nan")}

    return {"counts": counts, "ht_grad_norm": {"js": summary(ht_js), "rkl": summary(ht_rkl)},
            "rejected_hs_dlogp": {k: summary(v) for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="a testbed work folder whose seed<k>/teacher and student exist")
    p.add_argument("--seeds", default="3,4,5")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--json", default=str(TESTBED_GRADIENT_PROBE))
    args = p.parse_args(argv)
    from .pipeline import TestbedConfig, limit_threads

    limit_threads()
    work = Path(args.work)
    results = json.loads((work / "results.json").read_text(encoding="utf-8")) if (work / "results.json").is_file() \
        else None
    cfg = TestbedConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                           for k, v in results["config"].items()}) if results else TestbedConfig(out_dir=str(work))
    cfg = replace(cfg, distill_steps=args.steps)
    out: dict[str, Any] = {"work": str(work), "steps": args.steps, "seeds": {},
                           "command": "python -m benchmarks.privilege_illusion.gradient_probe "
                                      + " ".join(argv if argv is not None else sys.argv[1:])}
    for seed in (int(s) for s in args.seeds.split(",")):
        root = work / f"seed{seed}"
        calls = _capture(cfg, str(work / "data"), seed, str(root / "student"), str(root / "teacher"),
                         str(work / "gradient_probe" / f"seed{seed}"))
        out["seeds"][seed] = _per_token(calls)
        print(seed, json.dumps(out["seeds"][seed]))
    Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
