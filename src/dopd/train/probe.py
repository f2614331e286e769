"""`dopd-cli probe CONFIG.yaml`: check DOPD's premises on a few samples before training (docs/before_you_train.md).

Everything runs through the code a run uses: the trainer is built by `build_trainer` from the same config; accuracy
is `dopd.eval.evaluate_samples` (greedy, eval's extraction and metric); the rollouts are the trainer's
(`DOPDTrainer.rollout`, its engine); tokens are scored, routed and diagnosed by the trainer's own `compute_loss`
(the objective's routing and diagnostics), with the whole probe batch as one optimizer step; the learning-rate check
takes one optimizer step of the configured method through the same `compute_loss`.

1. accuracy of the student and the teacher on x and on x+p, with Wilson 95 % intervals;
2. where the tokens go: each regime's token share and diagnostics, and the share of the teacher-rejected tokens
   routed to the teacher (`premise_values`, the same numbers the in-run alarm reads);
3. how large a step: for each lr of the grid, one step from the same start on one training batch (the first
   per_device_train_batch_size x gradient_accumulation_steps samples, their rollouts from part 2), and the change of
   the full-vocabulary reverse KL of the student to the method's targets on held-back rollouts of the same prompts;
4. the verdict (`dopd.train.probe_report`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from dopd.data import CanonicalSample, load_and_validate
from dopd.distill.presets import Term
from dopd.distill.routing import REGIMES
from dopd.eval import evaluate_samples
from dopd.eval.extract import clean_reference
from dopd.eval.metrics import wilson_interval
from dopd.eval.workflow import write_predictions
from dopd.hparams import ConfigError, DOPDConfig, parse_config
from dopd.train.premise_alarm import premise_values
from dopd.train.probe_report import format_summary, verdict, write_partial_report, write_report
from dopd.train.rollout import RolloutResult, check_sampling_matches_loss, model_for_generation
from dopd.train.workflow import build_trainer, stage_objective

if TYPE_CHECKING:
    from dopd.train.trainer import DOPDTrainer

logger = logging.getLogger("dopd.probe")

VIEWS = ("student_x", "student_xp", "teacher_x", "teacher_xp")


# ------------------------------------------------------------------------------------------------ the pieces
def probe_dataset_names(cfg: DOPDConfig) -> str:
    names = cfg.probe.probe_dataset or cfg.data.eval_dataset or cfg.data.dataset
    if not names:
        raise ConfigError("the probe needs `probe_dataset`, `eval_dataset` or `dataset`")
    return names


def probe_config(cfg: DOPDConfig) -> DOPDConfig:
    """The run's config with the probe's data (`max_samples` = probe_max_samples) and rollouts per prompt."""
    rollout = cfg.rollout
    if cfg.probe.probe_num_rollouts:
        rollout = dataclasses.replace(rollout, num_generations=cfg.probe.probe_num_rollouts)
    limit = cfg.probe.probe_max_samples
    if cfg.data.max_samples is not None:
        limit = min(limit, cfg.data.max_samples)
    return cfg._replace(data=dataclasses.replace(cfg.data, max_samples=limit), rollout=rollout)


def accuracy_entry(correct: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else None, "low": low, "high": high, "n": n, "correct": correct}


def probe_eval_args(cfg: DOPDConfig, with_privilege: bool) -> Any:
    """The config's evaluation settings, one greedy answer per prompt, on x or on x+p."""
    return dataclasses.replace(cfg.evaluation, eval_num_samples=1, eval_temperature=None, eval_pass_k=None,
                               eval_with_privilege=with_privilege)


def measure_accuracy(trainer: DOPDTrainer, cfg: DOPDConfig, samples: Sequence[Any], out_dir: str
                     ) -> dict[str, dict[str, Any]]:
    """Greedy accuracy of the student and the teacher on x and on x+p (the same samples, eval's own code)."""
    out: dict[str, dict[str, Any]] = {}
    for view in tqdm(VIEWS, desc="probe: accuracy", disable=trainer.args.disable_tqdm):
        who, where = view.split("_")
        eval_args = probe_eval_args(cfg, where == "xp")
        if who == "student":
            with model_for_generation(trainer.model_wrapped, trainer.accelerator) as model, trainer.autocast():
                result = evaluate_samples(model, trainer.adapter, samples, cfg.data, eval_args, cfg.rollout)
        else:
            result = evaluate_samples(trainer.teacher, trainer.teacher_adapter, samples, cfg.data, eval_args,
                                      cfg.rollout)
        write_predictions(result.records, os.path.join(out_dir, f"predictions_{view}.jsonl"))
        correct = sum(int(r["correct"][0]) for r in result.records)
        out[view] = accuracy_entry(correct, len(result.records))
    return out


def _rollouts_by_sample(trainer: DOPDTrainer, encoded: Sequence[Any], seed: int) -> dict[int, tuple[list, list]]:
    """The trainer's rollout of `encoded` (seeded), kept per sample: id(sample) -> (prompts, responses)."""
    group = trainer.rollout_args.num_generations
    logger.info("probe: sampling %d answers (%d per prompt, up to %d tokens) with the trainer's rollout",
                group * len(encoded), group, trainer.rollout_args.max_new_tokens)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        result = trainer.rollout(trainer.model, list(encoded))
    return {id(s): (result.prompts[i * group:(i + 1) * group], result.responses[i * group:(i + 1) * group])
            for i, s in enumerate(encoded)}


@contextlib.contextmanager
def replayed_rollouts(trainer: DOPDTrainer, stored: dict[int, tuple[list, list]]) -> Iterator[None]:
    """The trainer's `rollout` returns the stored answers of each sample instead of sampling new ones, so that
    every lr starts from the same answers and the KL is measured on the same held-back answers."""
    def replay(model: Any, samples: list) -> RolloutResult:
        prompts = [p for s in samples for p in stored[id(s)][0]]
        responses = [r for s in samples for r in stored[id(s)][1]]
        return RolloutResult(prompts=prompts, responses=responses, num_tokens=sum(len(r) for r in responses),
                             seconds=0.0)

    trainer.rollout = replay  # an instance attribute shadows the method
    try:
        yield
    finally:
        del trainer.rollout


def run_step_losses(trainer: DOPDTrainer, encoded: Sequence[Any], grad: bool, desc: str
                    ) -> tuple[float, list[dict]]:
    """One optimizer step's losses through the trainer's `compute_loss` (micro-batches of
    per_device_train_batch_size, a progress bar named `desc`; `backward` when `grad`). Returns the step's loss and
    each micro-batch's logged `dopd/*` values."""
    size = trainer.args.per_device_train_batch_size
    chunks = [list(encoded[i:i + size]) for i in range(0, len(encoded), size)]
    trainer.set_step(chunks)
    scale = 1.0 if getattr(trainer, "loss_is_scaled_for_ga", False) else 1.0 / len(chunks)
    total = 0.0
    records: list[dict] = []
    model = trainer.model
    model.train()
    for chunk in tqdm(chunks, desc=desc, leave=False, disable=trainer.args.disable_tqdm):
        trainer.metrics.clear()
        with (torch.enable_grad() if grad else torch.no_grad()), trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, {"samples": chunk}) * scale
        if grad:
            loss.backward()
        trainer.release_heads()
        total += float(loss.detach())
        records.append(trainer.metrics.latest("dopd/"))
    trainer.metrics.clear()
    trainer.set_step(None)
    trainer.nonfinite_guard.cancel_skip()
    return total, records


def token_section(trainer: DOPDTrainer, encoded: Sequence[Any], seed: int) -> tuple[dict, dict, list[dict]]:
    """The trainer's rollouts of `encoded` (seeded), scored and routed by its `compute_loss` with the whole batch as
    one step; returns (`premise_values` of the logged diagnostics, the rollouts per sample, the per-micro-batch
    records)."""
    rollouts = _rollouts_by_sample(trainer, encoded, seed)
    with replayed_rollouts(trainer, rollouts):
        _, records = run_step_losses(trainer, encoded, grad=False, desc="probe: scoring the rollouts")
    return premise_values(records, trainer.loss_config.table), rollouts, records


def kl_measure_config(loss_config: Any) -> Any:
    """The method's routing with every term replaced by the full-vocabulary reverse KL to the same target (weight
    1, averaged over a regime's targets), token mean, no pruning: the distance to the method's targets."""
    table = {}
    for regime in REGIMES:
        targets = list(dict.fromkeys(t.target for t in loss_config.table[regime]))
        table[regime] = [Term(target, "rkl", 1.0 / len(targets)) for target in targets]
    return loss_config.replace(routing_table=table, loss_aggregation="token", prune_mode=None)


def measure_kl(trainer: DOPDTrainer, encoded: Sequence[Any], held: dict[int, tuple[list, list]]) -> float:
    config = trainer.loss_config
    trainer.loss_config = kl_measure_config(config)
    try:
        with replayed_rollouts(trainer, held):
            kl, _ = run_step_losses(trainer, encoded, grad=False, desc="probe: KL on held-back rollouts")
    finally:
        trainer.loss_config = config
    return kl


def lr_check(trainer: DOPDTrainer, batch: Sequence[Any], train_rollouts: dict, held: dict, grid: Sequence[float],
             ) -> dict[str, Any]:
    """For each lr: from the same weights, one optimizer step of the configured method on `batch` (its stored
    rollouts), the change of `measure_kl` on the held-back rollouts; the weights are restored afterwards."""
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    before = measure_kl(trainer, batch, held)
    rows = []
    try:
        for lr in tqdm(list(grid), desc="probe: learning rates", disable=trainer.args.disable_tqdm):
            with torch.no_grad():
                for p, s in zip(params, start):
                    p.copy_(s)
                    p.grad = None
            trainer.optimizer = None
            optimizer = trainer.create_optimizer()
            for group in optimizer.param_groups:
                group["lr"] = float(lr)
            with replayed_rollouts(trainer, train_rollouts):
                loss, _ = run_step_losses(trainer, batch, grad=True, desc=f"probe: one step at lr {lr:g}")
            if trainer.args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, trainer.args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            after = measure_kl(trainer, batch, held)
            rows.append({"lr": float(lr), "kl_before": before, "kl_after": after, "kl_change": after - before,
                         "step_loss": loss})
    finally:
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
                p.grad = None
        trainer.optimizer = None
    lowering = [r["lr"] for r in rows if r["kl_change"] < 0]
    return {"grid": rows, "suggested": max(lowering) if lowering else None, "kl_before": before,
            "batch_samples": len(batch)}


# ------------------------------------------------------------------------------------------------ the probe
@dataclasses.dataclass
class ProbeSetup:
    """What the probe runs on, checked before any model loads."""
    cfg: DOPDConfig  # the run's config with the probe's data and rollouts (`probe_config`)
    dataset: str
    samples: list[CanonicalSample]
    lr_grid: list[float]
    out_dir: str


def probe_setup(cfg: DOPDConfig) -> ProbeSetup:
    """Check the config for a probe and load its samples; a clear ConfigError before any model loads."""
    if not cfg.model.model_name_or_path:
        raise ConfigError("`model_name_or_path` is required: the student model")
    stage = cfg.finetuning.stage
    if stage == "sft":
        raise ConfigError("the probe checks a distillation run: stage `sft` has no teacher to check")
    loss_config, needs_teacher = stage_objective(cfg)
    if not needs_teacher:
        raise ConfigError(f"stage `{stage}` scores no teacher: the probe compares student and teacher")
    if not cfg.model.teacher_model_name_or_path:
        raise ConfigError(f"stage `{stage}` needs `teacher_model_name_or_path`")
    cfg = probe_config(cfg)
    check_sampling_matches_loss(loss_config, cfg.rollout)
    try:
        grid = cfg.probe.lr_grid(cfg.training.learning_rate)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    names = probe_dataset_names(cfg)
    samples = load_and_validate(cfg.data, names)[:cfg.probe.probe_max_samples]
    if not samples:
        raise ConfigError(f"probe dataset `{names}` has no valid samples")
    out_dir = cfg.probe.probe_output_dir or os.path.join(cfg.training.output_dir, "probe")
    return ProbeSetup(cfg, names, samples, grid, out_dir)


def accuracy_part(trainer: DOPDTrainer, setup: ProbeSetup, report: dict[str, Any]) -> None:
    """1. Does p help? (skipped, with the reason in the report, when no sample has a reference answer)"""
    if all(clean_reference(s.response) is None for s in setup.samples):
        report["accuracy"] = None
        report["accuracy_skipped"] = f"dataset `{setup.dataset}` has no reference answers: accuracy cannot be measured"
        logger.warning("probe: %s", report["accuracy_skipped"])
    else:
        report["accuracy"] = measure_accuracy(trainer, setup.cfg, setup.samples, setup.out_dir)


def tokens_part(trainer: DOPDTrainer, encoded: Sequence[Any], seed: int, report: dict[str, Any]) -> dict:
    """2. Where will the tokens go? (the whole probe batch as one step); returns the rollouts per sample."""
    values, rollouts, records = token_section(trainer, encoded, seed)
    report["tokens"] = values["tokens"]
    report["tokens"]["rejected_to_teacher"] = values["rejected_to_teacher"]
    report["tokens"]["rejected_to_self"] = values["rejected_to_self"]
    report["tokens"]["num_tokens"] = sum(r.get("dopd/num_tokens", 0.0) for r in records)
    return rollouts


def lr_part(trainer: DOPDTrainer, encoded: Sequence[Any], rollouts: dict, setup: ProbeSetup, seed: int,
            report: dict[str, Any]) -> None:
    """3. How large a step? (one training batch: the first per_device_train_batch_size x GA samples)"""
    if not setup.lr_grid:
        report["lr"] = {"grid": [], "suggested": None, "skipped": "probe_lr_grid is empty"}
        return
    size = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    batch = encoded[:size]
    held = _rollouts_by_sample(trainer, batch, seed + 1)
    report["lr"] = lr_check(trainer, batch, {id(s): rollouts[id(s)] for s in batch}, held, setup.lr_grid)


@contextlib.contextmanager
def timed_part(report: dict[str, Any], part: str, out_dir: str) -> Iterator[None]:
    """Time one part into `report["seconds"]`; when it finishes, record it in `parts_done` and write the report so
    far to probe_report.partial.json, so that a crash in a later part (an hour into a real pair's probe) keeps it."""
    started = time.time()
    yield
    report["seconds"][part] = round(time.time() - started, 1)
    report.setdefault("parts_done", []).append(part)
    path = write_partial_report(report, out_dir)
    logger.info("probe: %s done in %.0f s (so far: %s)", part, report["seconds"][part], path)


def run_probe(cfg: DOPDConfig) -> dict[str, Any]:
    """Run the four parts and return the report (the JSON contract of docs/before_you_train.md)."""
    started = time.time()
    setup = probe_setup(cfg)
    cfg = setup.cfg
    os.makedirs(setup.out_dir, exist_ok=True)
    trainer = build_trainer(cfg, setup.samples)
    encoded = [trainer.train_dataset[i] for i in range(len(setup.samples))]
    report: dict[str, Any] = {
        "config": {"stage": cfg.finetuning.stage, "student": cfg.model.model_name_or_path,
                   "teacher": cfg.model.teacher_model_name_or_path, "dataset": setup.dataset,
                   "samples": len(setup.samples), "rollouts_per_prompt": cfg.rollout.num_generations,
                   "learning_rate": cfg.training.learning_rate, "max_new_tokens": cfg.rollout.max_new_tokens},
        "seconds": {},
    }
    seed = cfg.training.seed
    with timed_part(report, "accuracy", setup.out_dir):
        accuracy_part(trainer, setup, report)
    with timed_part(report, "tokens", setup.out_dir):
        rollouts = tokens_part(trainer, encoded, seed, report)
    with timed_part(report, "lr", setup.out_dir):
        lr_part(trainer, encoded, rollouts, setup, seed, report)
    report["verdict"] = verdict(report, cfg.distill.teacher_sees_privileged)  # 4. the verdict
    report["seconds"]["total"] = round(time.time() - started, 1)
    report["output_dir"] = setup.out_dir
    return report


def run_probe_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    logging.basicConfig(format="[%(levelname)s|%(name)s] %(message)s", level=logging.INFO)
    cfg = parse_config(config_path, overrides)
    report = run_probe(cfg)
    paths = write_report(report, report["output_dir"])
    print(format_summary(report))
    for path in paths:
        print(f"  {os.path.abspath(path)}")
    failed = [c["check"] for c in report["verdict"] if c["holds"] is False]
    return 3 if (cfg.probe.probe_strict and failed) else 0
