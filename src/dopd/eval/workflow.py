"""Evaluation: generate answers on registry datasets, extract, score, aggregate; and `dopd-cli eval`.

The deployed student is evaluated on the plain view x (what it sees at inference, no privileged information);
`eval_with_privilege=true` evaluates on x+p instead (the privileged upper bound).

Building blocks the trainer can call during training:
- `evaluate_samples(model, adapter, samples, data_args, eval_args)` -> `EvalResult(metrics, records)`
  (generation + scoring + aggregation; the model's mode and the global RNG state are restored afterwards);
- `summarize(records, eval_args)` -> metrics, from records gathered e.g. across processes;
- `format_table(metrics)`, `write_outputs(result, out_dir, eval_args)`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from dopd.data import build_views, load_dataset_samples, text_only_view
from dopd.data.registry import load_dataset_info
from dopd.hparams import ConfigError, load_config_dict, parse_config
from dopd.model.loader import load_adapter, load_model
from dopd.model.paths import resolve_model_path

from .extract import clean_reference, extract_answer
from .metrics import aggregate, parse_ks, score
from .spec import EvalSpec, default_spec, resolve_specs

if TYPE_CHECKING:
    from dopd.data import CanonicalSample, PromptView
    from dopd.hparams import DataArguments, ModelArguments, RolloutArguments
    from dopd.hparams.eval_args import EvalArguments
    from dopd.model import ModelAdapter

logger = logging.getLogger("dopd.eval")


@dataclass
class EvalResult:
    """`metrics`: flat `{"<dataset>/accuracy": ..., "<dataset>/pass@k": ..., "average/accuracy": ...}`;
    `records`: one dict per prompt (uid, dataset, prompt, reference, predictions, extracted, correct, ...)."""

    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        return format_table(self.metrics)


# ------------------------------------------------------------------------------------------------ generation
def eval_temperature(eval_args: EvalArguments) -> float:
    if eval_args.eval_temperature is not None:
        return float(eval_args.eval_temperature)
    return 0.0 if eval_args.eval_num_samples == 1 else 1.0


def eval_generation_kwargs(eval_args: EvalArguments, rollout_args: Optional[RolloutArguments] = None
                           ) -> dict[str, Any]:
    """`generate` keyword arguments: greedy at temperature 0, else sampling with temperature / top_p (no top-k, no
    repetition penalty, whatever the checkpoint's generation_config.json says)."""
    max_new = eval_args.eval_max_new_tokens or getattr(rollout_args, "max_new_tokens", None) or 512
    temperature = eval_temperature(eval_args)
    kwargs: dict[str, Any] = {"max_new_tokens": int(max_new), "do_sample": temperature > 0, "repetition_penalty": 1.0}
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=float(eval_args.eval_top_p), top_k=0)
    return kwargs  # every setting explicit: the checkpoint's generation_config.json adds only eos / pad / bos


def _with_suffix(view: PromptView, suffix: str) -> PromptView:
    if not suffix:
        return view
    view = copy.copy(view)
    view.messages = copy.deepcopy(view.messages)
    last_user = max(i for i, m in enumerate(view.messages) if m["role"] == "user")
    view.messages[last_user]["content"] = view.messages[last_user]["content"] + suffix
    return view


def _last_user_text(messages: Sequence[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


@contextlib.contextmanager
def _eval_mode_and_seed(model: torch.nn.Module, seed: int):
    """Eval mode and a seeded RNG for the duration; the caller's mode and RNG state come back afterwards
    (so evaluating during training does not change the training run's random stream)."""
    was_training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            if was_training:
                model.train()


def generate_records(model: torch.nn.Module, adapter: ModelAdapter, samples: Sequence[CanonicalSample],
                     data_args: DataArguments, eval_args: EvalArguments,
                     rollout_args: Optional[RolloutArguments] = None, specs: Optional[dict[str, EvalSpec]] = None
                     ) -> list[dict[str, Any]]:
    """One record per sample with `eval_num_samples` decoded predictions; not yet scored."""
    specs = specs or {}
    n = eval_args.eval_num_samples
    gen_kwargs = eval_generation_kwargs(eval_args, rollout_args)
    vision = adapter if getattr(adapter, "is_vlm", False) else None
    batch_size = eval_args.eval_generation_batch_size
    records: list[dict[str, Any]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        prompts, metas = [], []
        for sample in chunk:
            plain, privileged = build_views(sample, vision, data_args)
            view = privileged if eval_args.eval_with_privilege else plain
            if vision is None and view.images:  # a text-only model reads the text, as in training
                view = text_only_view(view)
            spec = specs.get(sample.dataset) or default_spec(eval_args)
            view = _with_suffix(view, spec.suffix)
            encoded = adapter.encode_prompt(view, data_args.cutoff_len)
            prompts.append(encoded)
            metas.append((sample, view, encoded))
        repeated = [p for p in prompts for _ in range(n)]  # answers to one prompt stay adjacent
        batch = adapter.collate_prompts(repeated)
        responses = adapter.generate(model, batch, **gen_kwargs)
        for i, (sample, view, encoded) in enumerate(metas):
            texts = [adapter.tokenizer.decode(r, skip_special_tokens=True) for r in responses[i * n:(i + 1) * n]]
            records.append({
                "uid": sample.uid,
                "dataset": sample.dataset,
                "prompt": _last_user_text(view.messages),
                "reference": sample.response,
                "predictions": texts,
                "privileged_view": bool(eval_args.eval_with_privilege and getattr(view, "has_privilege", False)),
                "truncated": bool(encoded.truncated),
                "response_tokens": [len(r) for r in responses[i * n:(i + 1) * n]],
            })
        logger.info("eval: generated %d/%d prompts", min(start + batch_size, len(samples)), len(samples))
    return records


# ------------------------------------------------------------------------------------------ scoring, summary
def score_record(record: dict[str, Any], spec: EvalSpec) -> dict[str, Any]:
    """Add `reference_answer`, `extracted` and `correct` (lists parallel to `predictions`) to `record`."""
    reference = clean_reference(record.get("reference"))
    record["reference_answer"] = reference
    record["extracted"] = [extract_answer(p, spec.extractor) for p in record["predictions"]]
    record["correct"] = [
        reference is not None and score(e, reference, spec.metric, spec.tolerance) for e in record["extracted"]
    ]
    record["extractor"], record["metric"] = spec.extractor, spec.metric
    return record


def summarize(records: Sequence[dict[str, Any]], eval_args: EvalArguments) -> dict[str, float]:
    """Flat metrics per dataset (`<dataset>/accuracy`, `/pass@k`, `/mean@n`, `/num_prompts`, `/no_answer`,
    `/no_reference`) and `average/<metric>`: the unweighted mean over datasets."""
    ks = parse_ks(eval_args.eval_pass_k, eval_args.eval_num_samples)
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_dataset.setdefault(record["dataset"], []).append(record)
    metrics: dict[str, float] = {}
    per_dataset: list[dict[str, float]] = []
    for name, recs in by_dataset.items():
        values = aggregate([r["correct"] for r in recs], ks)
        values["no_answer"] = sum(e is None for r in recs for e in r["extracted"]) / max(
            1, sum(len(r["extracted"]) for r in recs))
        values["no_reference"] = float(sum(r.get("reference_answer") is None for r in recs))
        per_dataset.append(values)
        metrics.update({f"{name}/{key}": value for key, value in values.items()})
    if per_dataset:
        keys = [k for k in per_dataset[0] if k not in ("num_prompts", "no_reference")]
        for key in keys:
            vals = [d[key] for d in per_dataset if key in d]
            metrics[f"average/{key}"] = sum(vals) / len(vals)
        metrics["average/num_prompts"] = float(sum(d["num_prompts"] for d in per_dataset))
    return metrics


def evaluate_samples(model: torch.nn.Module, adapter: ModelAdapter, samples: Sequence[CanonicalSample],
                     data_args: DataArguments, eval_args: EvalArguments,
                     rollout_args: Optional[RolloutArguments] = None, specs: Optional[dict[str, EvalSpec]] = None) -> EvalResult:
    """Generate, extract, score and aggregate on `samples` (CanonicalSamples, any mix of datasets).

    `specs` maps dataset names to EvalSpecs; by default they are read from the registry in `data_args.dataset_dir`
    (`eval` key of each entry). The batch goes to the model's own device. Under DeepSpeed ZeRO-3, call this inside
    the parameter gather the rollout uses (`dopd.train.rollout.model_for_generation`)."""
    started = time.time()
    if specs is None:
        specs = resolve_specs(data_args, [s.dataset for s in samples], eval_args)
    with _eval_mode_and_seed(model, eval_args.eval_seed):
        records = generate_records(model, adapter, samples, data_args, eval_args, rollout_args, specs)
    for record in records:
        score_record(record, specs.get(record["dataset"]) or default_spec(eval_args))
    return EvalResult(metrics=summarize(records, eval_args), records=records, seconds=time.time() - started)


# -------------------------------------------------------------------------------------------------- outputs
def format_table(metrics: dict[str, float]) -> str:
    """A plain-text table: dataset, n, accuracy, pass@k..., mean@n (one row per dataset, then the average)."""
    datasets = list(dict.fromkeys(k.split("/", 1)[0] for k in metrics))
    columns: list[str] = ["accuracy"]
    for key in metrics:
        metric = key.split("/", 1)[1]
        if (metric.startswith("pass@") or metric.startswith("mean@")) and metric not in columns:
            columns.append(metric)
    rows = [["dataset", "n"] + columns]
    for name in datasets:
        if name == "average" and len(datasets) == 2:
            continue  # one dataset: the average repeats it
        n = metrics.get(f"{name}/num_prompts", 0.0)
        rows.append([name, str(int(n))] + [
            f"{100 * metrics[f'{name}/{c}']:.1f}" if f"{name}/{c}" in metrics else "-" for c in columns
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _resolve(out_dir: str, name: str) -> str:
    return name if os.path.isabs(name) else os.path.join(out_dir, name)


def write_predictions(records: list[dict[str, Any]], path: str) -> str:
    """One JSON line per prompt (with `prediction` beside `predictions` when there is one answer); returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            row = dict(record)
            if len(row["predictions"]) == 1:
                row["prediction"] = row["predictions"][0]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_outputs(result: EvalResult, out_dir: str, eval_args: EvalArguments, settings: Optional[dict[str, Any]] = None
                  ) -> tuple[str, str]:
    """Predictions JSON Lines (one line per prompt) and metrics JSON; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    pred_path = _resolve(out_dir, eval_args.predictions_file)
    metrics_path = _resolve(out_dir, eval_args.eval_metrics_file)
    for path in (pred_path, metrics_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_predictions(result.records, pred_path)
    per_dataset: dict[str, dict[str, float]] = {}
    for key, value in result.metrics.items():
        name, metric = key.split("/", 1)
        per_dataset.setdefault(name, {})[metric] = value
    payload = {"metrics": result.metrics, "per_dataset": per_dataset, "settings": settings or {},
               "seconds": round(result.seconds, 2)}
    with open(metrics_path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, ensure_ascii=False)
    return pred_path, metrics_path


# ------------------------------------------------------------------------------------------------ dopd-cli eval
def _load_eval_samples(data_args: DataArguments, names: list[str]) -> list[CanonicalSample]:
    """Registry samples; a missing local copy or an offline hub gets a hint naming the preparation command."""
    try:
        return load_dataset_samples(data_args, names)
    except ConfigError as err:
        try:
            info = load_dataset_info(data_args.dataset_dir)
        except ConfigError:
            raise err from None
        hints = []
        for name in names:
            spec = (info.get(name) or {}).get("eval") or {}
            if isinstance(spec, dict) and spec.get("prepare"):
                hints.append(f"`{name}`: {spec['prepare']}")
        if hints:
            raise ConfigError(f"{err}\nto make a local copy (needs the hub once): " + "; ".join(hints)) from None
        raise


def _model_path(model_args: ModelArguments) -> str:
    path = getattr(model_args, "model_name_or_path", None)
    if not path:
        raise ConfigError("model_name_or_path is required (the model to evaluate)")
    return resolve_model_path(path, role="student")


def run_eval(config_path: Optional[str], overrides: Sequence[str] = ()) -> tuple[EvalResult, str, str]:
    """Parse the config, load the model and the eval datasets, evaluate, write outputs.
    Returns (result, predictions path, metrics path)."""
    cfg = parse_config(config_path, overrides, with_training=False)
    raw = load_config_dict(config_path, overrides)
    data_args, eval_args = cfg.data, cfg.evaluation
    names = [n.strip() for n in str(data_args.eval_dataset or data_args.dataset or "").split(",") if n.strip()]
    if not names:
        raise ConfigError("no dataset to evaluate: set `eval_dataset` (or `dataset`), names from dataset_info.json")
    try:
        parse_ks(eval_args.eval_pass_k, eval_args.eval_num_samples)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    specs = resolve_specs(data_args, names, eval_args)
    samples = _load_eval_samples(data_args, names)  # data problems surface before any model is loaded
    if not samples:
        raise ConfigError(f"no samples in {', '.join(names)}")

    path = _model_path(cfg.model)
    adapter = load_adapter(path, cfg.model)
    model = load_model(path, cfg.model, adapter=adapter)
    if cfg.model.adapter_name_or_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.model.adapter_name_or_path)
    use_cpu = bool(raw.get("use_cpu")) or not torch.cuda.is_available()
    model.to("cpu" if use_cpu else "cuda")

    logger.info("evaluating %s on %d prompts of %s (%s view)", path, len(samples), ", ".join(names),
                "privileged" if eval_args.eval_with_privilege else "plain")
    result = evaluate_samples(model, adapter, samples, data_args, eval_args, cfg.rollout, specs)
    out_dir = eval_args.eval_output_dir or raw.get("output_dir") or os.path.join("saves", "eval")
    settings = {
        "model": cfg.model.model_name_or_path, "adapter": cfg.model.adapter_name_or_path, "datasets": names,
        "view": "privileged" if eval_args.eval_with_privilege else "plain",
        "num_samples": eval_args.eval_num_samples, **eval_generation_kwargs(eval_args, cfg.rollout),
        "extractors": {n: s.extractor for n, s in specs.items()}, "metrics": {n: s.metric for n, s in specs.items()},
    }
    pred_path, metrics_path = write_outputs(result, out_dir, eval_args, settings)
    return result, pred_path, metrics_path


def run_eval_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    """`dopd-cli eval CONFIG.yaml [key=value ...]`: prints the table and where the files went."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result, pred_path, metrics_path = run_eval(config_path, overrides)
    print(result.table())
    print(f"\npredictions: {pred_path}\nmetrics:     {metrics_path}")
    return 0
