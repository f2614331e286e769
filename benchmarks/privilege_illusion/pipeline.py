"""The testbed pipeline for one seed, through the repo's public entry points only.

    build tiny inits (dopd.model.tiny.build_tiny_model, seeded)
    teacher  = SFT on x+p          (run_train, stage sft, sft_view privileged)
    student  = brief SFT on x      (run_train, stage sft, sft_view plain)
    for each method: distil from the same student checkpoint (run_train, stage <preset>), checkpoints every
    `eval_every` steps; every checkpoint is evaluated on the held-out set WITHOUT p (dopd.eval.evaluate_samples).

Each seed runs in its own process with one torch thread: on a small shared CPU, one thread per process is several
times faster than two threads fighting over two busy cores (measured: a tiny teacher's forward+backward went from
~3 s to ~0.2 s).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger("dopd.testbed")


@dataclass(frozen=True)
class Method:
    """One distillation run from the common student start."""

    name: str
    stage: str
    overrides: tuple[tuple[str, Any], ...] = ()
    label: str = ""


METHODS: tuple[Method, ...] = (
    Method("vanilla_opd", "vanilla_opd", (("teacher_sees_privileged", False),),
           "vanilla OPD, teacher without p"),
    Method("vanilla_opd_priv", "vanilla_opd", (("teacher_sees_privileged", True),),
           "vanilla OPD, teacher with p"),
    Method("opsd", "opsd", (), "OPSD (privileged student as target)"),
    Method("uniform_dual", "uniform_dual", (), "uniform dual (0.5 JS(T) + 0.5 JS(S_p))"),
    Method("dopd", "dopd", (), "DOPD"),
    # pruning probe: A needs T(x+p), so the probe runs on vanilla OPD whose teacher sees p (see the report)
    Method("probe_top", "vanilla_opd", (("teacher_sees_privileged", True), ("prune_mode", "top")),
           "vanilla OPD (T with p), drop top 20% by A"),
    Method("probe_bottom", "vanilla_opd", (("teacher_sees_privileged", True), ("prune_mode", "bottom")),
           "vanilla OPD (T with p), drop bottom 20% by A"),
    Method("probe_random", "vanilla_opd", (("teacher_sees_privileged", True), ("prune_mode", "random")),
           "vanilla OPD (T with p), drop random 20%"),
    # the mechanism check (issue 24, `--variant confirm`): each a preset or a config key, nothing else changed
    Method("vanilla_opd_priv_full_rkl", "vanilla_opd_full_rkl", (("teacher_sees_privileged", True),),
           "vanilla OPD, teacher with p, full-vocabulary reverse KL"),
    Method("dopd_veto", "dopd", (("teacher_veto", True),), "DOPD + teacher veto"),
    Method("dopd_top1", "dopd", (("routing_statistic", "top1"),), "DOPD, regimes from top-1 probabilities"),
    Method("dopd_hs_teacher", "dopd_hs_teacher", (), "DOPD with HS's target = the teacher"),
)
# the default page's methods (the first eight); the confirmation's, fixed before any of its runs (issue 24)
DEFAULT_METHODS = tuple(m.name for m in METHODS[:8])
CONFIRM_METHODS = ("vanilla_opd_priv", "vanilla_opd_priv_full_rkl", "dopd", "dopd_veto", "dopd_top1",
                   "dopd_hs_teacher")
CONFIRM_SEEDS = (3, 4, 5)


@dataclass
class TestbedConfig:
    out_dir: str
    task: str = "text"  # "text" (task_text) or "vlm" (task_vlm); see vlm_config for the VLM sizes
    seeds: tuple[int, ...] = (0, 1, 2)
    task_seed: int = 1234  # the data is the same for every seed; seeds change inits, sampling and order
    num_train: int = 2000
    num_eval: int = 200
    hidden_fraction: float = 0.25
    family: str = "qwen2"
    teacher_size: str = "teacher"
    student_size: str = "student"
    teacher_steps: int = 300
    teacher_lr: float = 3e-3
    student_steps: int = 250
    # steps of SFT on x+p alone (privileged view) before the student's SFT on `student_data`: the student reads p
    # before its plain view is trained (the premise variant; 0 = none)
    student_priv_steps: int = 0
    # "mixed": the student's brief SFT sees x and x+p (the privileged student S(.|x,p) then reads p);
    # "plain": x only (then S(.|x,p) is out of distribution; see the page)
    student_data: str = "mixed"
    student_lr: float = 3e-3
    sft_batch: int = 32
    distill_steps: int = 120
    distill_lr: float = 5e-5
    distill_batch: int = 8  # prompts per step
    num_generations: int = 4
    max_new_tokens: int = 24
    eval_every: int = 20
    eval_batch: int = 100
    methods: tuple[str, ...] = DEFAULT_METHODS
    jobs: int = 3
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # more config keys for every distillation run
    # VLM task only: image side in px (images are never resized: image_min_pixels = image_max_pixels = side^2)
    image_size: int = 56
    cutoff_len: int = 256
    sft_extra: dict[str, Any] = field(default_factory=dict)  # more config keys for the two SFT runs
    # premise variant (`--variant premise`, `premise_config`): the teacher's SFT data ("privileged": x+p only, as the
    # paper's privileged teacher; "mixed": x and x+p, a teacher good without p and better with it), a validation
    # split (rows) and a learning-rate grid searched on it with `lr_select_method` (seed `seeds[0]`), the chosen lr
    # then used for every method alike
    variant: str = "default"
    teacher_data: str = "privileged"
    num_val: int = 0
    lr_grid: tuple[float, ...] = ()
    lr_select_method: str = "vanilla_opd"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def quick_config(out_dir: str, task: str = "text") -> TestbedConfig:
    """Pipeline check only: every stage and method runs a couple of steps on a handful of samples."""
    base = vlm_config(out_dir) if task == "vlm" else TestbedConfig(out_dir=out_dir)
    return replace(base, seeds=(0,), num_train=48, num_eval=8, teacher_steps=2, student_steps=1,
                   sft_batch=8, distill_steps=2, distill_batch=2, num_generations=2, max_new_tokens=8,
                   eval_every=1, eval_batch=8, jobs=1, quick=True)


# The premise variant's SFT budgets, chosen with `python -m benchmarks.privilege_illusion.sft_probe` on the validation
# split (seed 0) before any distillation run, by the premises alone (rows in results/
# testbed_premise_sft_probe.jsonl): a mixed teacher needs 900 steps to read p (300: 15% with p, 60% without; 900: 94%
# and 69% without); a student on the mixed set alone, with p / without p: 250 steps 23/21% (14.8/38.7% on the test
# split over three seeds, the first premise run), 500: 40/70%, 1000: 100/68% (the ceiling without p: no room left);
# 300 steps on x+p then 100 on the mixed set: 52/11%.
SFT_BUDGET_PREMISE = dict(teacher_steps=900, student_priv_steps=300, student_steps=100)
# The distillation lr grid of the premise variant. It ended at 2e-4 until that was chosen, at the grid's edge, with
# vanilla OPD still rising at the last step on seed 0 (results/testbed_premise_lr_grid_to_2e-4.json);
# then extended upward.
LR_GRID_PREMISE = (2e-5, 5e-5, 2e-4, 5e-4, 1e-3)


def premise_config(out_dir: str, quick: bool = False) -> TestbedConfig:
    """A variant meant to meet the paper's premises: a teacher trained on x and x+p (good without p, better with p),
    a student that reads p before its plain view is trained (whether its privileged view is at least as good as its
    plain one is measured and shown on the page, not assumed), SFT budgets from `SFT_BUDGET_PREMISE`, and the
    distillation lr chosen on a validation split by the field's basic result (vanilla OPD from that teacher, without
    p, must improve the start), then used for every method. How the budgets and the grid came about: see the
    comments above and the page's "Earlier runs"."""
    base = quick_config(out_dir) if quick else TestbedConfig(out_dir=out_dir)
    sft_steps = dict(teacher_steps=2, student_priv_steps=1, student_steps=1) if quick else SFT_BUDGET_PREMISE
    return replace(base, variant="premise", teacher_data="mixed", num_val=8 if quick else 100,
                   lr_grid=(5e-5, 2e-4) if quick else LR_GRID_PREMISE, **sft_steps)


def confirm_config(out_dir: str, quick: bool = False) -> TestbedConfig:
    """The mechanism check of issue 24: the premise variant (same SFT budgets, lr grid and lr rule) on fresh seeds
    (3, 4, 5; the hypotheses were drawn from seeds 0-2 of the default page), with the methods fixed before any run
    (`CONFIRM_METHODS`; the start is the reference row)."""
    base = premise_config(out_dir, quick=quick)
    return replace(base, variant="confirm", seeds=base.seeds if quick else CONFIRM_SEEDS,
                   methods=CONFIRM_METHODS)


def vlm_config(out_dir: str) -> TestbedConfig:
    """The VLM task's default size: tiny Qwen2-VL models, 56 px images (4 vision tokens), sized so that 3 seeds
    and every method finish in under 30 minutes on a 2-core CPU. The vision tower and projector of the randomly
    initialised tiny models are trained during the two SFT runs (frozen during distillation, the repo default)."""
    return TestbedConfig(out_dir=out_dir, task="vlm", family="qwen2_vl", num_train=1000, num_eval=100,
                         teacher_steps=300, student_steps=150, sft_batch=32, distill_steps=60, distill_batch=8,
                         num_generations=4, max_new_tokens=24, eval_every=20, eval_batch=100,
                         cutoff_len=320, sft_extra={"freeze_vision_tower": False,
                                                    "freeze_multi_modal_projector": False})


def task_module(cfg: TestbedConfig) -> Any:
    if cfg.task == "vlm":
        from . import task_vlm as module
    elif cfg.task == "text":
        from . import task_text as module
    else:
        raise ValueError(f"unknown testbed task {cfg.task!r} (text, vlm)")
    return module


# ---------------------------------------------------------------------------------------------- helpers
def limit_threads() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)


def _common_keys(cfg: TestbedConfig, data_dir: str, seed: int) -> dict[str, Any]:
    keys = {
        "dataset": task_module(cfg).DATASET_TRAIN, "dataset_dir": data_dir, "cutoff_len": cfg.cutoff_len,
        "report_to": "none", "use_cpu": True, "seed": seed, "disable_tqdm": True, "logging_steps": 1,
        "save_only_model": True, "plot_loss": False, "dataloader_num_workers": 0,
    }
    keys.update(_image_keys(cfg))
    return keys


def _image_keys(cfg: TestbedConfig) -> dict[str, Any]:
    if cfg.task != "vlm":
        return {}
    pixels = cfg.image_size * cfg.image_size
    return {"image_min_pixels": pixels, "image_max_pixels": pixels}


def _run_train(keys: dict[str, Any]) -> Any:
    from dopd.hparams import parse_config
    from dopd.train.workflow import run_train

    return run_train(parse_config(None, [f"{k}={v}" for k, v in keys.items()]))


def sft(cfg: TestbedConfig, data_dir: str, seed: int, init: str, out: str, view: str, steps: int, lr: float,
        dataset: str = "") -> str:
    if Path(out, "dopd_sft_done.json").is_file():  # the same SFT already ran in this work folder (lr selection)
        return out
    keys = _common_keys(cfg, data_dir, seed)
    keys["dataset"] = dataset or task_module(cfg).DATASET_TRAIN
    keys.update(cfg.sft_extra)
    keys.update({"model_name_or_path": init, "stage": "sft", "sft_view": view, "output_dir": out,
                 "per_device_train_batch_size": cfg.sft_batch, "max_steps": steps, "learning_rate": lr,
                 "lr_scheduler_type": "cosine", "warmup_steps": min(20, steps // 10), "save_steps": 10 ** 9,
                 "logging_steps": max(1, steps // 20)})
    _run_train(keys)
    Path(out, "dopd_sft_done.json").write_text(json.dumps({"steps": steps, "lr": lr, "view": view}), encoding="utf-8")
    return out


def distill(cfg: TestbedConfig, data_dir: str, seed: int, method: Method, student: str, teacher: str,
            out: str) -> str:
    keys = _common_keys(cfg, data_dir, seed)
    keys.update({"model_name_or_path": student, "teacher_model_name_or_path": teacher, "stage": method.stage,
                 "output_dir": out, "per_device_train_batch_size": cfg.distill_batch,
                 "num_generations": cfg.num_generations, "max_new_tokens": cfg.max_new_tokens,
                 "temperature": 1.0, "max_steps": cfg.distill_steps, "learning_rate": cfg.distill_lr,
                 "lr_scheduler_type": "constant", "save_steps": cfg.eval_every})
    keys.update(dict(method.overrides))
    keys.update(cfg.extra)
    _run_train(keys)
    return out


class Evaluator:
    """Held-out accuracy through `dopd.eval.evaluate_samples`, split by question kind (visible / hidden operand)."""

    def __init__(self, cfg: TestbedConfig, data_dir: str, dataset: str = "") -> None:
        from dopd.data import load_dataset_samples
        from dopd.hparams import parse_config

        DATASET_EVAL = dataset or task_module(cfg).DATASET_EVAL

        self.cfg = cfg
        self.parsed = {
            priv: parse_config(None, [
                f"dataset_dir={data_dir}", f"eval_dataset={DATASET_EVAL}", f"cutoff_len={cfg.cutoff_len}",
                f"eval_with_privilege={str(priv).lower()}", f"eval_max_new_tokens={cfg.max_new_tokens}",
                f"eval_generation_batch_size={cfg.eval_batch}", "eval_seed=0",
            ] + [f"{k}={v}" for k, v in _image_keys(cfg).items()], with_training=False)
            for priv in (False, True)
        }
        self.samples = load_dataset_samples(self.parsed[False].data, [DATASET_EVAL])
        rows = json.loads(Path(data_dir, f"{DATASET_EVAL}.json").read_text(encoding="utf-8"))
        self.hidden = {f"{DATASET_EVAL}:{i}": bool(r["meta"]["hidden"]) for i, r in enumerate(rows)}

    def __call__(self, model_path: str, with_privilege: bool = False) -> dict[str, float]:
        from dopd.eval import evaluate_samples
        from dopd.model import load_adapter, load_model

        parsed = self.parsed[with_privilege]
        adapter = load_adapter(model_path, parsed.model)
        model = load_model(model_path, parsed.model, adapter=adapter)
        result = evaluate_samples(model, adapter, self.samples, parsed.data, parsed.evaluation, parsed.rollout)
        out = {"accuracy": result.metrics["average/accuracy"]}
        for kind, flag in (("visible", False), ("hidden", True)):
            recs = [r for r in result.records if self.hidden.get(r["uid"]) is flag]
            out[f"accuracy_{kind}"] = sum(r["correct"][0] for r in recs) / len(recs) if recs else float("nan")
        out["example"] = result.records[0]["predictions"][0] if result.records else ""
        return out


def read_log(output_dir: str) -> list[dict[str, Any]]:
    path = Path(output_dir, "trainer_log.jsonl")
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _checkpoints(run_dir: str) -> list[tuple[int, str]]:
    found = []
    for child in Path(run_dir).glob("checkpoint-*"):
        try:
            found.append((int(child.name.split("-")[1]), str(child)))
        except ValueError:
            continue
    return sorted(found)


# ---------------------------------------------------------------------------------------------- one seed
def run_seed(cfg: TestbedConfig, seed: int, data_dir: str) -> dict[str, Any]:
    """Everything for one seed; returns (and writes to <out>/seed<k>/result.json) its numbers and curves."""
    limit_threads()
    from dopd.model.tiny import build_tiny_model

    started = time.time()
    root = Path(cfg.out_dir, f"seed{seed}")
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        t0 = time.time()
        value = fn(*args)
        timings[name] = round(time.time() - t0, 1)
        return value

    teacher_init = build_tiny_model(cfg.family, root / "init_teacher", size=cfg.teacher_size, tokenizer="bpe",
                                    seed=seed)
    student_init = build_tiny_model(cfg.family, root / "init_student", size=cfg.student_size, tokenizer="bpe",
                                    seed=seed + 1000)
    _check_answer_length(cfg, data_dir, str(student_init))
    teacher = timed("teacher_sft", *teacher_sft_args(cfg, data_dir, seed, str(teacher_init), root))
    student = timed("student_sft", student_sft, cfg, data_dir, seed, str(student_init), root)
    evaluate = Evaluator(cfg, data_dir)
    result: dict[str, Any] = {"seed": seed, "reference": {}, "methods": {}, "timings": timings}
    t0 = time.time()
    result["reference"]["student_before"] = evaluate(student)
    result["reference"]["student_before_with_p"] = evaluate(student, with_privilege=True)
    result["reference"]["teacher_with_p"] = evaluate(teacher, with_privilege=True)
    result["reference"]["teacher_without_p"] = evaluate(teacher)
    timings["reference_eval"] = round(time.time() - t0, 1)

    start_acc = result["reference"]["student_before"]["accuracy"]
    for method in METHODS:
        if method.name not in cfg.methods:
            continue
        result["methods"][method.name] = run_method(cfg, data_dir, seed, method, student, teacher, root, evaluate,
                                                    start_acc)
    timings["total"] = round(time.time() - started, 1)
    Path(root, "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def run_method(cfg: TestbedConfig, data_dir: str, seed: int, method: Method, student: str, teacher: str,
               root: Path, evaluate: Any, start_acc: float) -> dict[str, Any]:
    """One method distilled from the seed's start: its held-out curve (checkpoint weights deleted once evaluated),
    final accuracy and the logged steps the report reads."""
    run_dir = str(root / method.name)
    t0 = time.time()
    distill(cfg, data_dir, seed, method, student, teacher, run_dir)
    train_s = time.time() - t0
    curve = [{"step": 0, "accuracy": start_acc}]
    final = None
    for step, path in _checkpoints(run_dir):
        acc = evaluate(path)
        curve.append({"step": step, **{k: v for k, v in acc.items() if k != "example"}})
        if step == cfg.distill_steps:
            final = acc
        shutil.rmtree(path, ignore_errors=True)  # the numbers are kept; the weights are not needed
    if final is None:
        final = evaluate(run_dir)
        curve.append({"step": cfg.distill_steps, **{k: v for k, v in final.items() if k != "example"}})
    log = [r for r in read_log(run_dir) if "loss" in r and "step" in r]
    run = {
        "final": final, "curve": curve,
        "log": [{k: v for k, v in r.items()
                 if k in ("step", "loss", "rollout/response_length", "rollout/stopped_fraction")
                 or k.startswith("dopd/")} for r in log],
        "train_s": round(train_s, 1), "eval_s": round(time.time() - t0 - train_s, 1),
    }
    logger.info("seed %d %s: accuracy %.3f", seed, method.name, final["accuracy"])
    _cleanup_weights(run_dir)
    return run


def teacher_sft_args(cfg: TestbedConfig, data_dir: str, seed: int, init: str, root: Path) -> tuple:
    """`sft` arguments of the teacher: on x+p (`teacher_data: privileged`) or on x and x+p (`mixed`)."""
    if cfg.teacher_data == "mixed":
        return (sft, cfg, data_dir, seed, init, str(root / "teacher"), "plain", cfg.teacher_steps, cfg.teacher_lr,
                task_module(cfg).DATASET_MIXED)
    return (sft, cfg, data_dir, seed, init, str(root / "teacher"), "privileged", cfg.teacher_steps, cfg.teacher_lr)


def student_sft(cfg: TestbedConfig, data_dir: str, seed: int, init: str, root: Path) -> str:
    """The common start: `student_priv_steps` on x+p (privileged view) if any, then `student_steps` on
    `student_data` (mixed: x and x+p as plain prompts; plain: x only)."""
    task = task_module(cfg)
    if cfg.student_priv_steps:
        init = sft(cfg, data_dir, seed, init, str(root / "student_priv"), "privileged", cfg.student_priv_steps,
                   cfg.student_lr, task.DATASET_TRAIN)
    student_set = task.DATASET_MIXED if cfg.student_data == "mixed" else task.DATASET_TRAIN
    return sft(cfg, data_dir, seed, init, str(root / "student"), "plain", cfg.student_steps, cfg.student_lr,
               student_set)


def select_lr(cfg: TestbedConfig, data_dir: str) -> dict[str, Any]:
    """The premise variant's lr search: seed `seeds[0]`'s teacher and student (SFT as in `run_seed`, reused by it),
    then `lr_select_method` at each lr of the grid, scored by final accuracy on the validation split without p.
    The best lr wins (ties: the smaller). Returns the table and the choice; the test split is not touched."""
    limit_threads()
    from dopd.model.tiny import build_tiny_model

    seed = cfg.seeds[0]
    root = Path(cfg.out_dir, f"seed{seed}")
    root.mkdir(parents=True, exist_ok=True)
    teacher_init = build_tiny_model(cfg.family, root / "init_teacher", size=cfg.teacher_size, tokenizer="bpe",
                                    seed=seed)
    student_init = build_tiny_model(cfg.family, root / "init_student", size=cfg.student_size, tokenizer="bpe",
                                    seed=seed + 1000)
    fn, *args = teacher_sft_args(cfg, data_dir, seed, str(teacher_init), root)
    teacher = fn(*args)
    student = student_sft(cfg, data_dir, seed, str(student_init), root)
    evaluate = Evaluator(cfg, data_dir, dataset=VAL_DATASET)
    method = next(m for m in METHODS if m.name == cfg.lr_select_method)
    rows = [{"lr": 0.0, "accuracy": evaluate(student)["accuracy"], "note": "start"}]
    for lr in cfg.lr_grid:
        run_dir = str(Path(cfg.out_dir, "lr_select", f"{method.name}_lr{lr:g}"))
        distill(replace(cfg, distill_lr=lr, eval_every=10 ** 9), data_dir, seed, method, student, teacher, run_dir)
        rows.append({"lr": lr, "accuracy": evaluate(run_dir)["accuracy"]})
        _cleanup_weights(run_dir)
        logger.info("lr selection: %s lr %g -> validation accuracy %.3f", method.name, lr, rows[-1]["accuracy"])
    best = max(rows[1:], key=lambda r: (r["accuracy"], -r["lr"]))
    return {"method": method.name, "seed": seed, "split": VAL_DATASET, "rows": rows, "chosen_lr": best["lr"],
            "improves_start_on_val": best["accuracy"] > rows[0]["accuracy"]}


VAL_DATASET = "pi_text_val"


def write_val_split(cfg: TestbedConfig, data_dir: str) -> None:
    """`pi_text_val`: independent draws (another stream than train and test) for the premise variant's lr search."""
    from .task_text import TextTaskSpec, generate, registry_entry

    _, rows = generate(TextTaskSpec(num_train=0, num_eval=cfg.num_val, hidden_fraction=cfg.hidden_fraction,
                                    seed=cfg.task_seed + 7919))
    Path(data_dir, f"{VAL_DATASET}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    info_path = Path(data_dir, "dataset_info.json")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info[VAL_DATASET] = registry_entry(f"{VAL_DATASET}.json")
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")


def _check_answer_length(cfg: TestbedConfig, data_dir: str, model_dir: str) -> None:
    """Warn when a reference answer chain cannot fit in max_new_tokens: no generation could reach `Answer:`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = json.loads(Path(data_dir, f"{task_module(cfg).DATASET_EVAL}.json").read_text(encoding="utf-8"))
    longest = max(len(tokenizer(r["messages"][-1]["content"])["input_ids"]) for r in rows)
    if longest + 1 > cfg.max_new_tokens:  # + the end-of-turn token
        logger.warning("the longest reference answer is %d tokens (+1 end of turn) but max_new_tokens is %d: "
                       "answers will be cut before `Answer:`", longest, cfg.max_new_tokens)


def _cleanup_weights(run_dir: str) -> None:
    """Distilled students are only evaluated; delete their weights to keep the work folder small."""
    for path in Path(run_dir).glob("*.safetensors"):
        path.unlink()


def run_seed_entry(args: tuple[TestbedConfig, int, str]) -> dict[str, Any]:
    cfg, seed, data_dir = args
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    return run_seed(cfg, seed, data_dir)


def prepare_seed_entry(args: tuple[TestbedConfig, int, str]) -> None:
    """The teacher's and the student's SFT of one seed, as `run_seed` runs them (it skips them when done)."""
    cfg, seed, data_dir = args
    limit_threads()
    from dopd.model.tiny import build_tiny_model

    root = Path(cfg.out_dir, f"seed{seed}")
    root.mkdir(parents=True, exist_ok=True)
    teacher_init = build_tiny_model(cfg.family, root / "init_teacher", size=cfg.teacher_size, tokenizer="bpe",
                                    seed=seed)
    student_init = build_tiny_model(cfg.family, root / "init_student", size=cfg.student_size, tokenizer="bpe",
                                    seed=seed + 1000)
    fn, *rest = teacher_sft_args(cfg, data_dir, seed, str(teacher_init), root)
    fn(*rest)
    student_sft(cfg, data_dir, seed, str(student_init), root)


def select_lr_entry(args: tuple[TestbedConfig, str]) -> dict[str, Any]:
    cfg, data_dir = args
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    return select_lr(cfg, data_dir)


def run_all(cfg: TestbedConfig) -> dict[str, Any]:
    """Write the task data, run every seed (in `cfg.jobs` processes), gather the results."""
    started = time.time()
    data_dir = str(Path(cfg.out_dir, "data"))
    if cfg.task == "vlm":
        from .task_vlm import VLMTaskSpec, write_registry as write_vlm

        task = write_vlm(data_dir, VLMTaskSpec(num_train=cfg.num_train, num_eval=cfg.num_eval,
                                               hidden_fraction=cfg.hidden_fraction, image_size=cfg.image_size,
                                               seed=cfg.task_seed))
    else:
        from .task_text import TextTaskSpec, write_registry

        task = write_registry(data_dir, TextTaskSpec(num_train=cfg.num_train, num_eval=cfg.num_eval,
                                                     hidden_fraction=cfg.hidden_fraction, seed=cfg.task_seed))
    lr_selection = None
    if cfg.lr_grid:
        if cfg.task != "text":
            raise ValueError("the lr search (premise variant) is implemented for the text task only")
        write_val_split(cfg, data_dir)
        if cfg.jobs > 1 and len(cfg.seeds) > 1:
            # the other seeds' SFT runs (which `run_seed` then finds done) beside the lr search on the first seed
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(min(cfg.jobs, len(cfg.seeds))) as pool:
                pending = pool.apply_async(select_lr_entry, ((cfg, data_dir),))
                pool.map(prepare_seed_entry, [(cfg, seed, data_dir) for seed in cfg.seeds[1:]])
                lr_selection = pending.get()
        else:
            lr_selection = select_lr(cfg, data_dir)
        cfg = replace(cfg, distill_lr=lr_selection["chosen_lr"])
    jobs = [(cfg, seed, data_dir) for seed in cfg.seeds]
    if cfg.jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(cfg.jobs, len(jobs))) as pool:
            per_seed = pool.map(run_seed_entry, jobs)
    else:
        per_seed = [run_seed_entry(job) for job in jobs]
    out = {"config": cfg.to_json(), "task": task, "seeds": per_seed, "runtime_s": round(time.time() - started, 1)}
    if lr_selection is not None:
        out["lr_selection"] = lr_selection
    return out


def load_existing(out_dir: str) -> Optional[dict[str, Any]]:
    path = Path(out_dir, "results.json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
