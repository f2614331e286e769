"""Shared helpers of bench_step.py, bench_rollout.py and bench_trl.py.

- `ModelSpec` / `build_pair`: a student and a teacher of a real architecture (Qwen2 text or Qwen2-VL), random init,
  built from a transformers config with the real Qwen2 tokenizer and vocabulary (151,936 logit rows), no hub. The
  config, tokenizer (and image processor) are saved to a folder so `dopd.model.load_adapter` works; the weights
  stay in memory.
- `make_samples`: a small in-memory dataset (`CanonicalSample`s with a hint, or an image + labelled boxes).
- `make_dopd_trainer`: `DOPDTrainer` from `dopd.train.workflow.build_trainer`, the builder `run_train` uses.
- `fixed_length_rollouts`: every rollout generates exactly `max_new_tokens` tokens (stages compare equal work).
- `StepTimer`: wall time of every optimizer step (callback; CUDA synchronised).
- peak memory (`MemoryProbe`, `run_child`), environment (`environment`), tables and JSON (`print_table`, `write_json`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QWEN2_VOCAB = 151936  # logit rows of the real Qwen2 / Qwen2-VL checkpoints (tokenizer: 151,665 ids)
HEAD_DIM = 64


# ---------------------------------------------------------------------------------------------------- arguments
def add_common_args(parser: argparse.ArgumentParser, *, hidden: int = 512, layers: int = 4,
                    teacher_hidden: int = 768, teacher_layers: int = 4) -> None:
    """Model, device and output arguments every script shares."""
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="dtype of both models' weights (pure, no autocast); GPU runs: bfloat16")
    parser.add_argument("--hidden", type=int, default=hidden, help="student hidden size (head_dim 64)")
    parser.add_argument("--layers", type=int, default=layers, help="student decoder layers")
    parser.add_argument("--teacher-hidden", type=int, default=teacher_hidden, help="teacher hidden size")
    parser.add_argument("--teacher-layers", type=int, default=teacher_layers, help="teacher decoder layers")
    parser.add_argument("--vocab", type=int, default=QWEN2_VOCAB,
                        help="logit rows of both models (the tokenizer is always the real Qwen2 one)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")


def setup_torch(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")


def workdir(args: argparse.Namespace) -> str:
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return args.workdir
    if not getattr(args, "_tmp", None):
        args._tmp = tempfile.mkdtemp(prefix="dopd_bench_")
    return args._tmp


# ---------------------------------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    family: str  # qwen2 | qwen2_vl
    hidden: int
    layers: int
    vocab: int = QWEN2_VOCAB

    @property
    def heads(self) -> int:
        return max(1, self.hidden // HEAD_DIM)

    @property
    def kv_heads(self) -> int:
        return max(1, self.heads // 2)


def _special_ids(tok: Any) -> dict[str, int]:
    conv = tok.convert_tokens_to_ids
    return {"bos": conv("<|endoftext|>"), "eos": conv("<|im_end|>"), "pad": conv("<|endoftext|>"),
            "image": conv("<|image_pad|>"), "video": conv("<|video_pad|>"),
            "vision_start": conv("<|vision_start|>"), "vision_end": conv("<|vision_end|>")}


def make_config(spec: ModelSpec, ids: dict[str, int]) -> Any:
    """A transformers config of the real architecture with the given width/depth (head_dim 64, GQA 2:1)."""
    import transformers as tf

    text = dict(vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.hidden * 11 // 4,
                num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
                max_position_embeddings=8192, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                pad_token_id=ids["pad"], tie_word_embeddings=False)
    if spec.family == "qwen2":
        return tf.Qwen2Config(**text)
    if spec.family == "qwen2_vl":
        mrope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]}  # sums to 64 / 2
        vision = dict(depth=2, embed_dim=max(64, spec.hidden // 2), hidden_size=spec.hidden, num_heads=2,
                      mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return tf.Qwen2VLConfig(text_config={**text, "rope_parameters": mrope}, vision_config=vision,
                                tie_word_embeddings=False, image_token_id=ids["image"], video_token_id=ids["video"],
                                vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"])
    raise ValueError(f"family must be qwen2 or qwen2_vl, got {spec.family!r}")


def build_model(spec: ModelSpec, folder: str, seed: int, dtype: str = "float32") -> Any:
    """Random-init model of `spec`; its config, tokenizer (+ image processor) and generation config saved in
    `folder` (no weights), so `load_adapter(folder)` gives the family adapter. Returns the model (CPU)."""
    import torch
    import transformers as tf
    from transformers import GenerationConfig

    # the tiny-model builder's tokenizer / image processor setup (real Qwen2 tokenizer + the family's template)
    from dopd.model.tiny import _load_tokenizer, _save_image_processor

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tok = _load_tokenizer("qwen2", spec.family)
    ids = _special_ids(tok)
    config = make_config(spec, ids)
    cls = tf.Qwen2ForCausalLM if spec.family == "qwen2" else tf.Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    model = cls(config)
    model.generation_config = GenerationConfig(eos_token_id=[ids["eos"], ids["pad"]], pad_token_id=ids["pad"],
                                               bos_token_id=ids["bos"], do_sample=False)
    if not (out / "config.json").is_file():
        config.save_pretrained(str(out))
        model.generation_config.save_pretrained(str(out))
        tok.save_pretrained(str(out))
        if spec.family == "qwen2_vl":
            _save_image_processor(spec.family, out, tok)
    model = model.to(getattr(torch, dtype))
    model.train()
    return model


def build_pair(args: argparse.Namespace, family: str, need_teacher: bool = True) -> tuple[Any, str, Any, str]:
    """(student, student_dir, teacher or None, teacher_dir or None) for `family`, as the arguments say."""
    root = workdir(args)
    s_spec = ModelSpec(family, args.hidden, args.layers, args.vocab)
    s_dir = os.path.join(root, f"{family}-student-{args.hidden}x{args.layers}-{args.vocab}")
    student = build_model(s_spec, s_dir, seed=args.seed, dtype=args.dtype)
    teacher = t_dir = None
    if need_teacher:
        t_spec = ModelSpec(family, args.teacher_hidden, args.teacher_layers, args.vocab)
        t_dir = os.path.join(root, f"{family}-teacher-{args.teacher_hidden}x{args.teacher_layers}-{args.vocab}")
        teacher = build_model(t_spec, t_dir, seed=args.seed + 1, dtype=args.dtype)
    return student, s_dir, teacher, t_dir


def count_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------- data
_WORDS = ("the", "answer", "is", "seven", "because", "we", "add", "three", "and", "four", "then", "check", "it")


def question(i: int, words: int) -> str:
    """A prompt of about `words` words (same length for every i: equal work per sample)."""
    body = " ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(words))
    return f"Problem {i % 10}: {body}. What is the result?"


def response_text(tokenizer: Any, num_tokens: int) -> str:
    """A reference answer of exactly `num_tokens - 1` tokens (+ the end-of-turn token = `num_tokens`)."""
    words: list[str] = []
    while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < num_tokens - 1:
        words.append(_WORDS[len(words) % len(_WORDS)])
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][: num_tokens - 1]
    return tokenizer.decode(ids)


def make_images(folder: str, count: int, size: int = 224) -> list[str]:
    from PIL import Image, ImageDraw

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"img{i}.png")
        if not os.path.isfile(path):
            img = Image.new("RGB", (size, size), (40 * i % 255, 120, 200))
            ImageDraw.Draw(img).rectangle([20 + i, 30, 120 + i, 150], fill=(230, 60, 60))
            img.save(path)
        paths.append(path)
    return paths


def make_samples(family: str, count: int, prompt_words: int, hint_words: int, response: Optional[str],
                 image_dir: Optional[str] = None) -> list[Any]:
    """In-memory `CanonicalSample`s: text -> a hint as privileged information; VLM -> one image and two labelled
    boxes (`boxes_text`)."""
    from dopd.data.sample import Box, CanonicalSample, PrivilegedRecord

    samples = []
    images = make_images(image_dir, count) if family == "qwen2_vl" else []
    for i in range(count):
        hint = " ".join(_WORDS[(2 * i + j) % len(_WORDS)] for j in range(hint_words))
        if family == "qwen2_vl":
            msgs = [{"role": "user", "content": "<image>" + question(i, prompt_words)}]
            priv = PrivilegedRecord(boxes=[Box("red box", (20.0 + i, 30.0, 120.0 + i, 150.0)),
                                           Box("background", (0.0, 0.0, 223.0, 223.0))])
            samples.append(CanonicalSample(uid=f"bench:{i}", dataset="bench", index=i, source_file="<memory>",
                                           messages=msgs, response=response, images=[images[i]], privileged=priv,
                                           privilege=["boxes_text"]))
        else:
            msgs = [{"role": "user", "content": question(i, prompt_words)}]
            samples.append(CanonicalSample(uid=f"bench:{i}", dataset="bench", index=i, source_file="<memory>",
                                           messages=msgs, response=response,
                                           privileged=PrivilegedRecord(hint=f"first {hint}"), privilege=["hint"]))
    return samples


# ---------------------------------------------------------------------------------------------------- trainers
def dopd_config(args: argparse.Namespace, stage: str, student_dir: str, teacher_dir: Optional[str],
                batch_size: int, num_generations: int, max_new_tokens: int, max_steps: int,
                **extra: Any) -> Any:
    """A `DOPDConfig` as `dopd-cli train` would parse it (the dataset is given in memory instead)."""
    from dopd.hparams.parser import parse_config_dict

    cfg = {
        "model_name_or_path": student_dir, "stage": stage, "num_generations": num_generations,
        "max_new_tokens": max_new_tokens, "temperature": 1.0, "cutoff_len": 4096,
        "output_dir": os.path.join(workdir(args), f"out-{stage}"), "per_device_train_batch_size": batch_size,
        "max_steps": max_steps, "logging_steps": 1, "save_strategy": "no", "learning_rate": 1e-5,
        "report_to": "none", "use_cpu": not args.device.startswith("cuda"), "seed": args.seed,
        "disable_tqdm": True, "plot_loss": False, "bf16": False, "fp16": False, "dataloader_num_workers": 0,
        "image_max_pixels": 224 * 224, "image_min_pixels": 56 * 56, "torch_dtype": args.dtype,
    }
    if teacher_dir:
        cfg["teacher_model_name_or_path"] = teacher_dir
    cfg.update(extra)
    return parse_config_dict(cfg)


def make_dopd_trainer(cfg: Any, student: Any, teacher: Optional[Any], samples: Sequence[Any]) -> Any:
    """`DOPDTrainer` from `dopd.train.workflow.build_trainer`, the function `run_train` builds it with (models given
    in memory instead of loaded; the adapters come from the saved config/tokenizer folders)."""
    from dopd.train.workflow import build_trainer

    return build_trainer(cfg, list(samples), student=student, teacher=teacher)


def fixed_length_rollouts(adapter: Any) -> None:
    """Make `adapter.generate` produce exactly `max_new_tokens` tokens per answer: `min_new_tokens =
    max_new_tokens` (transformers masks every stop token until then), so every step and every stage does the
    same work whatever the random model samples. Patches this adapter instance only."""
    original = adapter.generate

    def generate(model: Any, batch: dict, **gen_kwargs: Any) -> list[list[int]]:
        if "max_new_tokens" in gen_kwargs:
            gen_kwargs.setdefault("min_new_tokens", gen_kwargs["max_new_tokens"])
        return original(model, batch, **gen_kwargs)

    adapter.generate = generate


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def synchronised(fn: Callable[..., Any], device: str) -> Callable[..., Any]:
    """`fn` followed by a CUDA synchronisation, so wall-clock timers around it measure the GPU work too."""

    def wrapped(*a: Any, **kw: Any) -> Any:
        out = fn(*a, **kw)
        sync(device)
        return out

    return wrapped


def step_timer(device: str) -> Any:
    """A `TrainerCallback` recording the wall time of every optimizer step (begin -> end, CUDA synchronised)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            self.times.append(time.perf_counter() - self._start)

    return StepTimer()


# ---------------------------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Reset this process's peak resident set (VmHWM; Linux), so `peak_rss()` covers what runs from here on."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class MemoryProbe:
    """Peak memory of this process from `start()` on. CPU: peak RSS (ru_maxrss, whole process; run each case in a
    fresh subprocess) and the RSS at `start()`; CUDA: max_memory_allocated and memory_allocated at `start()`."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.base = 0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()

    def result(self) -> dict[str, int]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            kind = "cuda_max_memory_allocated"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
            kind = "peak_rss"
        return {"peak_bytes": int(peak), "base_bytes": int(self.base), "peak_extra_bytes": int(peak - self.base),
                "memory_kind": kind}


def run_child(script: str, argv: Sequence[str]) -> dict[str, Any]:
    """Run `python script argv...` in a fresh process; its result is the JSON on the last line of stdout."""
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-3000:]}
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        return {"error": "no JSON result; stdout tail:\n" + proc.stdout[-2000:] + proc.stderr[-2000:]}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------------- reporting
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": args.device, "dtype": args.dtype, "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
    }
    try:
        import trl

        env["trl"] = trl.__version__
    except ImportError:
        env["trl"] = None
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: Optional[str] = None) -> str:
    """Print (and return) a Markdown table."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(f"\n{title}")
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def verdict(value: Optional[float], target: float, lower_is_better: bool = True) -> str:
    if value is None or value != value:
        return "n/a"
    ok = value <= target if lower_is_better else value >= target
    return "met" if ok else "NOT met"


def write_json(path: Optional[str], payload: dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    print(f"\nresults written to {path}")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def median(values: Sequence[float]) -> float:
    """Median: robust to a step slowed by another process on a shared machine."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def quiet(trainer: Any) -> None:
    """No per-step log dicts printed to stdout (the benchmark prints its own table)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
