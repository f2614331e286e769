"""What one optimizer step does to the real pair's student (issue 14: why did every method fall in 8 steps?).

On one training batch of the real pair (the first `--batch` training prompts, `--num-generations` rollouts each,
`--max-new-tokens` sampled tokens), through the trainer that `dopd-cli train` builds:

1. **Gradient check.** The trainer's loss (chunked, from hidden states) and a plain reference written here on full
   logits, for the sampled-token reverse KL of `vanilla_opd`: -mean((log t(y) - log s(y)).detach() * log s(y)).
   Their gradients over every trained parameter must agree (cosine 1, equal norms).
2. **Direction.** A step of L2 norm eps along -grad must lower, and one along +grad raise, the full-vocabulary
   reverse KL(s || t) at the batch's sampled positions (the quantity whose gradient the sampled estimator estimates).
3. **Step size.** AdamW's first step is lr * sign(grad) per parameter (bias-corrected moments; eps negligible), an
   L2 norm of lr * sqrt(#parameters) whatever the gradient's scale. For each `--lrs` value the same full KL after
   that step: the largest decrease is the learning rate this probe suggests (a rule on training data only: no
   validation or test problem is touched).

    python -m benchmarks.real_pair_lr_probe                       # real weights (fetch_real_qwen.sh 0.5b and 1.5b)
    python -m benchmarks.real_pair_lr_probe --quick               # tiny random-init models: checks the pipeline
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.paths import REAL_PAIR_LR_PROBE, REPO

RESULTS = REAL_PAIR_LR_PROBE


def build(out: str, quick: bool, method: str, batch: int, group: int, max_new_tokens: int) -> tuple[Any, list]:
    """The trainer of `method` on the real pair's task, and its first training micro-batch."""
    from dataclasses import replace

    from benchmarks import real_pair as rp
    from dopd.data import load_dataset_samples
    from dopd.hparams.parser import parse_config_dict
    from dopd.train.workflow import build_trainer

    base = rp.quick_config(out) if quick else rp.RealPairConfig(out_dir=out)
    cfg = replace(base, batch=batch, num_generations=group, max_new_tokens=max_new_tokens)
    rp.write_task(Path(out, "data"), cfg)
    student, teacher = rp.model_paths(cfg)
    keys = rp.train_keys(cfg, method, rp.HINT_TEMPLATES["block"], student, teacher, str(Path(out, "run")))
    keys.update(eval_strategy="no")
    keys.pop("eval_dataset")
    parsed = parse_config_dict(keys)
    trainer = build_trainer(parsed, load_dataset_samples(parsed.data, ["rp_train"])[:batch])
    dataset = trainer.train_dataset
    samples = trainer.data_collator([dataset[i] for i in range(batch)])["samples"]
    return trainer, samples


class _StudentKL:
    """The student's full-vocabulary and sampled-token reverse KL to the teacher's full distribution, on one fixed
    rollout: at the current weights, or after adding an update to them (undone afterwards)."""

    def __init__(self, trainer: Any, params: list, rollout: Any, lt_full: Any) -> None:
        self.trainer, self.params, self.rollout, self.lt_full = trainer, params, rollout, lt_full

    def student_logp(self, grad: bool) -> tuple[Any, Any]:
        import torch
        import torch.nn.functional as F

        trainer, vocab = self.trainer, self.trainer.adapter.vocab_size
        with torch.set_grad_enabled(grad):
            hidden, labels, head = trainer._score(trainer.model, trainer.adapter, self.rollout.prompts,
                                                  self.rollout.responses)
            keep = labels.ne(-100)
            return F.log_softmax(head(hidden[keep]).float()[:, :vocab], -1), labels[keep]

    def now(self) -> tuple[float, float]:
        ls, y = self.student_logp(False)
        full = (ls.exp() * (ls - self.lt_full)).sum(-1).mean().item()
        sampled = (ls.gather(1, y[:, None]) - self.lt_full.gather(1, y[:, None])).mean().item()
        return full, sampled

    def after(self, update: list, scale: float) -> tuple[float, float]:
        import torch

        with torch.no_grad():
            for p, u in zip(self.params, update):
                p.add_(u, alpha=scale)
        try:
            return self.now()
        finally:
            with torch.no_grad():
                for p, u in zip(self.params, update):
                    p.add_(u, alpha=-scale)


def _grads(params: list) -> list:
    import torch

    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _trainer_and_reference_grads(trainer: Any, samples: list, rollout: Any, targets: Any, kl: _StudentKL
                                 ) -> tuple[float, list, list, int]:
    """The trainer's loss gradient, and a plain full-logits reference's: the sampled-token reverse KL's policy
    gradient. Returns the trainer's loss, both gradients and the number of sampled tokens."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    loss = trainer._distill_loss(model, samples, rollout, targets=targets)
    loss.backward()
    g_repo = _grads(kl.params)
    model.zero_grad(set_to_none=True)
    ls, y = kl.student_logp(True)
    ls_y = ls.gather(1, y[:, None]).squeeze(1)
    lt_y = kl.lt_full.gather(1, y[:, None]).squeeze(1)
    (-((lt_y - ls_y).detach() * ls_y).mean()).backward()
    g_ref = _grads(kl.params)
    model.zero_grad(set_to_none=True)
    return float(loss), g_repo, g_ref, int(y.numel())


def probe(trainer: Any, samples: list, norms: list[float], lrs: list[float]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    started = time.time()
    rollout = trainer.rollout(model, samples)
    rollout_s = time.time() - started
    targets = trainer._score_targets(model, samples, rollout)
    hidden_t, labels_t, head_t = targets[2], targets[3], targets[4]
    with torch.no_grad():
        lt_full = F.log_softmax(head_t(hidden_t[labels_t.ne(-100)]).float()[:, :trainer.adapter.vocab_size], -1)
    kl = _StudentKL(trainer, params, rollout, lt_full)
    loss, g_repo, g_ref, sampled_tokens = _trainer_and_reference_grads(trainer, samples, rollout, targets, kl)
    norm_repo = float(sum((g * g).sum() for g in g_repo) ** 0.5)
    norm_ref = float(sum((g * g).sum() for g in g_ref) ** 0.5)
    cosine = float(sum((a * b).sum() for a, b in zip(g_repo, g_ref))) / (norm_repo * norm_ref)

    n_params = sum(p.numel() for p in params)
    base = kl.now()
    direction = []
    for eps in norms:
        for sign, name in ((-1.0, "descent"), (1.0, "ascent")):
            full, sampled = kl.after(g_repo, sign * eps / norm_repo)
            direction.append({"step": name, "l2": eps, "kl_full": full, "kl_sampled": sampled})
    signs = [torch.sign(g) for g in g_repo]
    adam = []
    for lr in lrs:
        full, sampled = kl.after(signs, -lr)
        adam.append({"lr": lr, "l2": lr * n_params ** 0.5, "kl_full": full, "kl_sampled": sampled})
    best = min(adam, key=lambda r: r["kl_full"]) if adam else None
    return {"loss": loss, "grad_norm_trainer": norm_repo, "grad_norm_reference": norm_ref,
            "grad_cosine": cosine, "trained_parameters": n_params, "sampled_tokens": sampled_tokens,
            "rollout_s": round(rollout_s, 1), "kl_full_before": base[0], "kl_sampled_before": base[1],
            "direction": direction, "adam_first_step": adam,
            "suggested_lr": best["lr"] if best and best["kl_full"] < base[0] else None}


def print_report(res: dict[str, Any]) -> None:
    b_full, b_s = res["kl_full_before"], res["kl_sampled_before"]
    print(f"\n{res['trained_parameters'] / 1e6:.0f}M trained parameters, {res['sampled_tokens']} sampled tokens; "
          f"gradient: trainer {res['grad_norm_trainer']:.4g}, plain reference {res['grad_norm_reference']:.4g}, "
          f"cosine {res['grad_cosine']:.6f}")
    print(f"before: KL full {b_full:.5f}, sampled estimate {b_s:.5f}")
    print("| step | L2 norm | KL full | change | sampled estimate | change |\n|---|---|---|---|---|---|")
    for r in res["direction"]:
        print(f"| {r['step']} along the gradient | {r['l2']:g} | {r['kl_full']:.5f} | {r['kl_full'] - b_full:+.5f} "
              f"| {r['kl_sampled']:.5f} | {r['kl_sampled'] - b_s:+.5f} |")
    for r in res["adam_first_step"]:
        print(f"| AdamW first step, lr {r['lr']:g} | {r['l2']:.4f} | {r['kl_full']:.5f} | "
              f"{r['kl_full'] - b_full:+.5f} | {r['kl_sampled']:.5f} | {r['kl_sampled'] - b_s:+.5f} |")
    print(f"suggested lr (largest full-KL decrease after one AdamW step): {res['suggested_lr']}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_pair_lr_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny random-init models (pipeline check)")
    p.add_argument("--method", default="vanilla_opd", help="the real pair's method whose loss is probed")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--norms", default="0.005,0.02,0.05", help="L2 norms of the steps along the gradient")
    p.add_argument("--lrs", default="1e-5,3e-6,1e-6,3e-7,1e-7", help="AdamW learning rates (first step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help=f"results JSON (default {RESULTS.relative_to(REPO)}; none with --quick)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    torch.manual_seed(args.seed)
    work = tempfile.mkdtemp(prefix="real_pair_lr_probe_")
    trainer, samples = build(work, args.quick, args.method, args.batch, args.num_generations, args.max_new_tokens)
    res = probe(trainer, samples, [float(x) for x in args.norms.split(",") if x],
                [float(x) for x in args.lrs.split(",") if x])
    res.update(method=args.method, quick=args.quick, batch=args.batch, num_generations=args.num_generations,
               max_new_tokens=args.max_new_tokens, seed=args.seed, finished=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                       time.gmtime()))
    print_report(res)
    out = args.out or (None if args.quick else str(RESULTS))
    if out:
        Path(out).write_text(json.dumps(res, indent=2), encoding="utf-8")
        print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
