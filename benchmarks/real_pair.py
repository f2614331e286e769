"""Real weights: Qwen2.5-Coder-1.5B-Instruct (teacher) -> Qwen2.5-Coder-0.5B-Instruct (student), on CPU.

Two-step arithmetic word problems, generated on the fly; p = a step hint (the first step worked out, never the final
answer). Every training run goes through `dopd.train.workflow.run_train` with a config, exactly as `dopd-cli train`
builds it; every evaluation through `dopd.eval.evaluate_samples` (greedy, `number` extractor, numeric metric).

    bash ../shared/tools/fetch_real_qwen.sh 0.5b && bash ../shared/tools/fetch_real_qwen.sh 1.5b
    python -m benchmarks.real_pair --method template          # hint template measured on the validation split
    python -m benchmarks.real_pair --method reference         # start and teacher, held-out, with and without p
    python -m benchmarks.real_pair --method vanilla_opd       # one method per invocation (each appends a record)
    python -m benchmarks.real_pair --method vanilla_opd_priv
    python -m benchmarks.real_pair --method dopd
    python -m benchmarks.real_pair --report-only              # docs/real_pair.md + docs/real_pair_curves.png
    python -m benchmarks.real_pair --quick                    # pipeline check with tiny models, into a temp dir

Results are appended to results/real_pair.jsonl (one JSON record per invocation); the page is written
from that file only. Work files (data, runs) go to saves/real_pair (or --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

from benchmarks.paths import REAL_PAIR, REAL_PAIR_LR_PROBE, REAL_PAIR_PREDICTIONS, REPO

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("dopd.real_pair")
REAL_DIR = Path(os.path.expanduser("~/.cache/dopd-real"))
RESULTS = REAL_PAIR
PREDICTIONS = REAL_PAIR_PREDICTIONS

# How p is written into the privileged view (data arg `hint_template`), candidates measured on the validation split.
# Both append the hint after the question and ask for nothing else: an answer-format instruction after the hint made
# both models skip their reasoning (measured before this script; see the page).
HINT_TEMPLATES = {
    "block": "\n\n[Privileged hint]\n{hint}\n[End of hint]",  # the repo default
    "hint_line": "\n\nHint: {hint}",
}

# method name -> (stage, extra config keys, label)
METHODS = {
    "vanilla_opd": ("vanilla_opd", {"teacher_sees_privileged": False}, "vanilla OPD, teacher without p"),
    # prune_mode top with fraction 0 drops nothing; it only makes the trainer score the privileged student too, so
    # the diagnostics (which need q_S and q_T) are logged for the privileged-teacher baseline as well
    "vanilla_opd_priv": ("vanilla_opd", {"teacher_sees_privileged": True, "prune_mode": "top", "prune_fraction": 0.0},
                         "vanilla OPD, teacher with p"),
    "dopd": ("dopd", {}, "DOPD"),
    # the mechanism check of issue 24 (each a config key or a preset); the privileged student is scored in the
    # vanilla run for the diagnostics only, as in vanilla_opd_priv
    "dopd_veto": ("dopd", {"teacher_veto": True}, "DOPD + teacher veto"),
    "vanilla_opd_priv_full_rkl": ("vanilla_opd_full_rkl", {"teacher_sees_privileged": True, "prune_mode": "top",
                                                           "prune_fraction": 0.0},
                                  "vanilla OPD, teacher with p, full-vocabulary reverse KL"),
}
STAGES = ("template", "reference", *METHODS)

NAMES = ("Ava", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Liam", "Mila",
         "Noah", "Olga", "Pedro")
ITEMS = ("apples", "stickers", "marbles", "books", "cards", "pencils", "shells", "coins")


@dataclass
class RealPairConfig:
    out_dir: str
    student: str = str(REAL_DIR / "qwen2.5-coder-0.5b-instruct")
    teacher: str = str(REAL_DIR / "qwen2.5-coder-1.5b-instruct")
    task_seed: int = 2026
    num_train: int = 1000  # training stream (a step uses batch prompts; only the first steps * batch are reached)
    num_eval: int = 200  # held-out test split
    num_val: int = 20  # validation split (hint template)
    steps: int = 8
    batch: int = 2  # prompts per step
    num_generations: int = 4  # answers per prompt
    max_new_tokens: int = 128  # rollout length
    eval_max_new_tokens: int = 256
    eval_every: int = 4
    eval_batch: int = 25
    lr: float = 1e-5
    # float32 throughout: on this AVX2-only CPU a bf16 forward was 4x slower than float32 (see the page), and pure
    # bf16 AdamW rounds away updates of ~1e-5
    student_dtype: str = "float32"
    teacher_dtype: str = "float32"
    hint_template: str = ""  # "" -> the template chosen on the validation split (the results file's record)
    seed: int = 0
    quick: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def quick_config(out_dir: str) -> RealPairConfig:
    """Pipeline check: tiny random-init models, a handful of problems, two steps per method."""
    return replace(RealPairConfig(out_dir=out_dir), student="", teacher="", num_train=16, num_eval=6, num_val=4,
                   steps=2, batch=2, num_generations=2, max_new_tokens=8, eval_max_new_tokens=8, eval_every=1,
                   eval_batch=8, student_dtype="float32", teacher_dtype="float32", quick=True)


# ---------------------------------------------------------------------------------------------- the task
def make_problem(rng: random.Random) -> dict[str, Any]:
    """A two-step word problem, its step hint (the first step worked out, not the answer) and the answer."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    b, c = rng.randint(3, 9), rng.randint(6, 19)
    prod = b * c
    if kind == 0:
        a = rng.randint(11, 89)
        q = f"{name} has {a} {item}. Then {name} buys {b} packs with {c} {item} in each pack. How many {item} does {name} have now?"
        hint = f"The {b} packs hold {b} x {c} = {prod} {item}."
        ans = a + prod
    elif kind == 1:
        a = prod + rng.randint(5, 80)
        q = f"A shop has {a} {item}. It sells {b} boxes with {c} {item} in each box. How many {item} are left in the shop?"
        hint = f"The {b} boxes hold {b} x {c} = {prod} {item}."
        ans = a - prod
    elif kind == 2:
        a = rng.randint(5, prod - 1)
        q = f"{name} collects {c} {item} every day for {b} days and then gives away {a} {item}. How many {item} does {name} keep?"
        hint = f"In {b} days {name} collects {b} x {c} = {prod} {item}."
        ans = prod - a
    else:
        a = rng.randint(2, 6)
        q = f"{name} has {b} bags with {c} {item} in each bag and shares all of them equally among {a} friends, keeping the rest. How many {item} does {name} keep?"
        hint = f"The {b} bags hold {b} x {c} = {prod} {item}."
        ans = prod % a
    return {"question": q, "hint": hint, "answer": ans, "kind": kind}


def write_task(data_dir: Path, cfg: RealPairConfig) -> dict[str, Any]:
    """rp_train (the stream), rp_val (validation), rp_eval (held-out test) as registry datasets (sharegpt, hint)."""
    rng = random.Random(cfg.task_seed)
    seen: set[str] = set()

    def draw(n: int) -> list[dict[str, Any]]:
        rows = []
        while len(rows) < n:
            prob = make_problem(rng)
            if prob["question"] in seen:  # the three splits never share a question
                continue
            seen.add(prob["question"])
            rows.append({"messages": [{"role": "user", "content": prob["question"]},
                                      {"role": "assistant", "content": str(prob["answer"])}],
                         "privileged": prob["hint"], "meta": {"answer": prob["answer"], "kind": prob["kind"]}})
        return rows

    splits = {"rp_eval": draw(cfg.num_eval), "rp_val": draw(cfg.num_val), "rp_train": draw(cfg.num_train)}
    data_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, rows in splits.items():
        (data_dir / f"{name}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
        info[name] = {"file_name": f"{name}.json", "formatting": "sharegpt",
                      "columns": {"messages": "messages", "privileged": "privileged"},
                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                               "assistant_tag": "assistant"},
                      "privilege": ["hint"], "eval": {"extractor": "number", "metric": "numeric"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return {"example": splits["rp_train"][0], **{f"num_{k}": len(v) for k, v in splits.items()}}


# ---------------------------------------------------------------------------------------------- models, eval
def model_paths(cfg: RealPairConfig) -> tuple[str, str]:
    if cfg.quick:
        from dopd.model.tiny import build_tiny_model

        root = Path(cfg.out_dir, "tiny")
        return (build_tiny_model("qwen2", root / "student", size="student", tokenizer="bpe", seed=1),
                build_tiny_model("qwen2", root / "teacher", size="teacher", tokenizer="bpe", seed=2))
    for path in (cfg.student, cfg.teacher):
        if not Path(path, "config.json").is_file():
            raise SystemExit(f"{path} missing: run bash ../shared/tools/fetch_real_qwen.sh 0.5b (and 1.5b) first")
    return cfg.student, cfg.teacher


def data_keys(cfg: RealPairConfig, template: str) -> dict[str, Any]:
    return {"dataset_dir": str(Path(cfg.out_dir, "data")), "cutoff_len": 1024, "hint_template": template,
            "eval_max_new_tokens": cfg.eval_max_new_tokens, "eval_generation_batch_size": cfg.eval_batch,
            "eval_seed": 0}


def evaluate(cfg: RealPairConfig, model_path: str, dataset: str, template: str, with_p: bool, dtype: str
             ) -> dict[str, Any]:
    """Greedy held-out accuracy of `model_path` on `dataset`, with or without p (dopd.eval.evaluate_samples)."""
    from dopd.data import load_dataset_samples
    from dopd.eval import evaluate_samples
    from dopd.hparams.parser import parse_config_dict
    from dopd.model import load_adapter, load_model

    keys = {**data_keys(cfg, template), "eval_dataset": dataset, "eval_with_privilege": with_p, "torch_dtype": dtype}
    parsed = parse_config_dict(keys, with_training=False)
    samples = load_dataset_samples(parsed.data, [dataset])
    adapter = load_adapter(model_path, parsed.model)
    model = load_model(model_path, parsed.model, adapter=adapter)
    started = time.time()
    result = evaluate_samples(model, adapter, samples, parsed.data, parsed.evaluation, parsed.rollout)
    seconds = time.time() - started
    correct = sum(int(r["correct"][0]) for r in result.records)
    tokens = sum(len(str(r["predictions"][0])) for r in result.records)
    del model
    return {"accuracy": correct / len(result.records), "correct": correct, "n": len(result.records),
            "seconds": round(seconds, 1), "mean_answer_chars": tokens / max(1, len(result.records)),
            "example": str(result.records[0]["predictions"][0])[:600] if result.records else ""}


def chosen_template(cfg: RealPairConfig, records: list[dict[str, Any]]) -> tuple[str, str]:
    """(name, template): --hint-template if given, else the template record's choice, else the repo default."""
    if cfg.hint_template:
        name = next((k for k, v in HINT_TEMPLATES.items() if v == cfg.hint_template), "custom")
        return name, cfg.hint_template
    for rec in reversed(records):
        if rec.get("stage") == "template" and rec.get("part") == "chosen" and rec.get("quick") == cfg.quick:
            return rec["chosen"], HINT_TEMPLATES[rec["chosen"]]
    return "block", HINT_TEMPLATES["block"]


# ---------------------------------------------------------------------------------------------- stages
def run_template(cfg: RealPairConfig, emit: Any, done: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Both models, both hint templates and no hint, on the validation split (each evaluation `emit`ted as it
    finishes). The template with the teacher's best accuracy with p is chosen (p is there to make the teacher's
    supervision better); ties go to the repo default (block). The teacher's evaluations run first. Parts in `done`
    (see `recorded_evaluations`) are taken from there, not measured again."""
    student, teacher = model_paths(cfg)
    val: dict[str, Any] = {}
    for role, path, dtype in (("teacher", teacher, cfg.teacher_dtype), ("student", student, cfg.student_dtype)):
        for name, template in (*HINT_TEMPLATES.items(), ("none", None)):
            key = f"{role}/x+p[{name}]" if template else f"{role}/x"
            if key in (done or {}):
                val[key] = done[key]
                logger.info("template %s: already recorded (%s, %.3f); skipped", key, done[key].get("finished"),
                            done[key]["accuracy"])
                continue
            val[key] = evaluate(cfg, path, "rp_val", template or HINT_TEMPLATES["block"], template is not None, dtype)
            emit({"part": key, "split": "rp_val", **val[key]})
            logger.info("template %s: %.3f (%.0f s)", key, val[key]["accuracy"], val[key]["seconds"])
        if role == "teacher":
            best = max(HINT_TEMPLATES, key=lambda k: (val[f"teacher/x+p[{k}]"]["accuracy"], k == "block"))
            emit({"part": "chosen", "chosen": best,
                  "rule": "highest teacher accuracy with p on the validation split; ties to the repo default (block)"})
    return {"part": "done"}


# what makes two held-out evaluations the same measurement (greedy decoding: the batch size is not among them)
SAME_EVALUATION = ("student", "teacher", "task_seed", "num_eval", "num_val", "eval_max_new_tokens",
                   "student_dtype", "teacher_dtype", "quick")


def recorded_evaluations(cfg: RealPairConfig, stage: str, records: list[dict[str, Any]],
                         tname: Optional[str] = None) -> dict[str, dict[str, Any]]:
    """The evaluations of `stage` already in the results file for this task and models (and hint template `tname`
    when given; a template-stage part names its own template), by part: a `--method reference` or `template` run
    measures only the others (each takes from minutes to 1.5 hours here). Delete a record to measure it again."""
    mine = cfg.to_json()
    found: dict[str, dict[str, Any]] = {}
    for rec in records:
        theirs = rec.get("config") or {}
        if (rec.get("stage") == stage and "accuracy" in rec and (tname is None or rec.get("template") == tname)
                and all(theirs.get(k, RealPairConfig.__dataclass_fields__[k].default) == mine[k]
                        for k in SAME_EVALUATION)):
            found[rec["part"]] = rec
    return found


def run_reference(cfg: RealPairConfig, template: str, emit: Any, done: Optional[dict[str, Any]] = None
                  ) -> dict[str, Any]:
    """Start (student) and teacher on the held-out split, without and with p; one record per evaluation. Parts in
    `done` (see `recorded_evaluations`) are skipped."""
    student, teacher = model_paths(cfg)
    for key, path, with_p, dtype in (("student/x", student, False, cfg.student_dtype),
                                     ("student/x+p", student, True, cfg.student_dtype),
                                     ("teacher/x+p", teacher, True, cfg.teacher_dtype),
                                     ("teacher/x", teacher, False, cfg.teacher_dtype)):
        if key in (done or {}):
            logger.info("reference %s: already recorded (%s, %.3f); skipped", key, done[key].get("finished"),
                        done[key]["accuracy"])
            continue
        result = evaluate(cfg, path, "rp_eval", template, with_p, dtype)
        emit({"part": key, "split": "rp_eval", **result})
        logger.info("reference %s: %.3f (%.0f s)", key, result["accuracy"], result["seconds"])
    return {"part": "done"}


def train_keys(cfg: RealPairConfig, method: str, template: str, student: str, teacher: str, out: str
               ) -> dict[str, Any]:
    stage, extra, _ = METHODS[method]
    keys = {
        **data_keys(cfg, template),
        "model_name_or_path": student, "teacher_model_name_or_path": teacher, "stage": stage,
        "dataset": "rp_train", "eval_dataset": "rp_eval", "eval_strategy": "steps", "eval_steps": cfg.eval_every,
        "torch_dtype": cfg.student_dtype, "teacher_torch_dtype": cfg.teacher_dtype,
        "per_device_train_batch_size": cfg.batch, "num_generations": cfg.num_generations,
        "max_new_tokens": cfg.max_new_tokens, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
        "max_steps": cfg.steps, "learning_rate": cfg.lr, "lr_scheduler_type": "constant", "warmup_steps": 0,
        "save_strategy": "no", "logging_steps": 1, "report_to": "none", "use_cpu": True, "seed": cfg.seed,
        "output_dir": out, "disable_tqdm": True, "plot_loss": True, "dataloader_num_workers": 0,
    }
    keys.update(extra)
    return keys


def run_method(cfg: RealPairConfig, method: str, template: str) -> dict[str, Any]:
    from dopd.hparams.parser import parse_config_dict
    from dopd.train.workflow import run_train

    student, teacher = model_paths(cfg)
    out = str(Path(cfg.out_dir, "runs", f"{method}-lr{cfg.lr:g}"))
    shutil.rmtree(out, ignore_errors=True)
    keys = train_keys(cfg, method, template, student, teacher, out)
    started = time.time()
    result = run_train(parse_config_dict(keys))  # the config a YAML with these keys gives `dopd-cli train`
    seconds = time.time() - started
    log = result.log_history
    curve = [{"step": r["step"], "accuracy": r["eval/average/accuracy"], "n": r.get("eval/average/num_prompts"),
              "seconds": r.get("eval/seconds")} for r in log if "eval/average/accuracy" in r]
    train_log = [{k: v for k, v in r.items() if k in ("step", "loss") or k.startswith(("dopd/", "time/", "rollout/"))}
                 for r in log if "loss" in r and "step" in r]
    step_s = [r["time/rollout_s"] + r.get("time/scoring_s", 0.0) + r.get("time/update_s", 0.0)
              for r in train_log if "time/rollout_s" in r]
    eval_s = sum(p["seconds"] or 0.0 for p in curve)
    for path in Path(out).glob("*.safetensors"):  # only the numbers are kept
        path.unlink()
    if not cfg.quick:  # a copy of the held-out answers beside the records (the work folder is not committed)
        keep_predictions(out, method, cfg.lr)
    steps_done = max((r["step"] for r in train_log), default=0)
    # a run stopped before its last step (SIGTERM / Ctrl-C end training gracefully) is kept, but not as a result
    part = "method" if steps_done >= cfg.steps else "stopped"
    return {"part": part, "steps_done": steps_done,
            "curve": curve, "log": train_log, "train_s": round(seconds, 1), "eval_s": round(eval_s, 1),
            "mean_step_s": round(sum(step_s) / len(step_s), 3) if step_s else None,
            "config_keys": {k: v for k, v in keys.items() if k not in ("output_dir", "dataset_dir")},
            "plots": [os.path.relpath(p, cfg.out_dir) for p in result.plots],
            # the held-out answers behind each curve point (the trainer's eval_predictions/step-N.jsonl)
            "predictions": sorted(os.path.relpath(p, cfg.out_dir)
                                  for p in Path(out, "eval_predictions").glob("step-*.jsonl"))}


def keep_predictions(out: str, method: str, lr: float, folder: Path = PREDICTIONS) -> None:
    """Copy the run's held-out answers (the trainer's eval_predictions/step-N.jsonl) to
    `<folder>/<method>-lr<lr>-step<N>.jsonl`, the name real_pair_report.python_answers reads."""
    for path in Path(out, "eval_predictions").glob("step-*.jsonl"):
        folder.mkdir(parents=True, exist_ok=True)
        step = int(path.stem.split("-")[1])
        shutil.copyfile(path, folder / f"{method}-lr{lr:g}-step{step}.jsonl")


# ---------------------------------------------------------------------------------------------- records
def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


# RealPairConfig fields a flag of the same name (dashes for underscores) overrides
INT_OVERRIDES = ("steps", "eval_every", "eval_batch", "num_eval", "batch", "num_generations", "max_new_tokens")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_pair", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=STAGES, help="the one stage this invocation runs")
    p.add_argument("--report-only", action="store_true", help="rewrite the page from the results file")
    p.add_argument("--quick", action="store_true", help="pipeline check with tiny models (temp dir; every stage)")
    p.add_argument("--out", default=None, help="work folder (default saves/real_pair; a temp dir with --quick)")
    p.add_argument("--results", default=None, help=f"results JSONL (default {RESULTS.relative_to(REPO)}; "
                                                   "<out>/real_pair.jsonl with --quick)")
    p.add_argument("--report-dir", default=None, help="where real_pair.md and its PNG go (default docs/; "
                                                      "<out>/report with --quick)")
    for name in INT_OVERRIDES:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--hint-template", default=None, help="override the validation-chosen hint template")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    logging.getLogger("dopd.eval").setLevel(logging.INFO)  # "eval: generated 150/200 prompts" as it goes
    out = args.out or (tempfile.mkdtemp(prefix="real_pair_quick_") if args.quick else str(REPO / "saves" / "real_pair"))
    cfg = quick_config(out) if args.quick else RealPairConfig(out_dir=out)
    for name in (*INT_OVERRIDES, "lr"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.hint_template:
        cfg.hint_template = args.hint_template.encode().decode("unicode_escape")
    results = Path(args.results) if args.results else (Path(out, "real_pair.jsonl") if args.quick else RESULTS)
    report_dir = Path(args.report_dir) if args.report_dir else (Path(out, "report") if args.quick else REPO / "docs")
    Path(out).mkdir(parents=True, exist_ok=True)
    task = write_task(Path(out, "data"), cfg)

    stages = [args.method] if args.method else (list(STAGES) if args.quick else [])
    if not stages and not args.report_only:
        raise SystemExit("give --method NAME, --report-only or --quick")
    for stage in stages:
        records = read_records(results)
        tname, template = chosen_template(cfg, records)
        command = "python -m benchmarks.real_pair " + " ".join(shlex.quote(a) for a in argv)
        started = time.time()
        logger.info("stage %s (hint template %s)", stage, tname)
        head = {"stage": stage, "quick": cfg.quick, "template": tname, "config": cfg.to_json(), "task": task,
                "command": command}

        def emit(body: dict[str, Any]) -> None:
            append_record(results, {**head, "wall_s": round(time.time() - started, 1),
                                    "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **body})

        if stage == "template":
            emit(run_template(cfg, emit, recorded_evaluations(cfg, "template", records)))
        elif stage == "reference":
            emit(run_reference(cfg, template, emit, recorded_evaluations(cfg, "reference", records, tname)))
        else:
            emit(run_method(cfg, stage, template))
        logger.info("stage %s done in %.0f s -> %s", stage, time.time() - started, results)
    from benchmarks.real_pair_report import write_page

    probe = (json.loads(REAL_PAIR_LR_PROBE.read_text(encoding="utf-8"))
             if REAL_PAIR_LR_PROBE.is_file() and not cfg.quick else None)
    paths = write_page(read_records(results), report_dir, quick=cfg.quick, probe=probe)
    print(f"results: {results}\npage:    {paths['markdown']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
