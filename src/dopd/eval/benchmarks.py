"""The paper's public benchmarks: registry entries (data/dataset_info.json) and local preparation.

Text benchmarks read straight from the hub through the registry (columns mapped in the entry). The VLM benchmarks
store images inside parquet columns, options in separate columns and no `<image>` placeholders, which the registry
cannot map; `python -m dopd.eval.prepare NAME` (online, once) converts them to a local alpaca JSON with image files
under `<dataset_dir>/benchmarks/`, which their entries point at. Offline, the hub entries fail with the data layer's
ConfigError and the file entries with "file not found" plus the preparation command.

Hub ids, splits and column names were taken from the datasets' cards (see docs/evaluation.md for what was checked).
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from .extract import CHOICE_LETTERS

BOXED_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices, in the form \"Answer: X\"."
PREPARED_DIR = "benchmarks"
ALPACA_COLUMNS = {"prompt": "instruction", "response": "output", "images": "images"}

Row = dict[str, Any]
Converter = Callable[[Row, "ImageSaver"], Optional[Row]]


@dataclass
class Benchmark:
    name: str
    hub_id: str  # where the rows come from ("github:..." when there is no hub copy)
    split: str
    eval: dict[str, Any]
    subset: Optional[str] = None
    columns: dict[str, str] = field(default_factory=dict)  # text benchmarks: registry column mapping
    convert: Optional[Converter] = None  # VLM benchmarks: hub row -> alpaca row (prepared locally)
    is_vlm: bool = False

    @property
    def prepared_file(self) -> str:
        return f"{PREPARED_DIR}/{self.name}.json"

    def registry_entry(self, file_name: Optional[str] = None) -> dict[str, Any]:
        """The dataset_info.json entry: hub-backed for text benchmarks, the prepared local file for VLMs.
        `file_name` points a text entry at a local copy in the hub's column format (tests, offline mirrors)."""
        spec = dict(self.eval)
        spec["source"] = f"{self.hub_id}" + (f" [{self.subset}]" if self.subset else "") + f" split={self.split}"
        if self.convert is not None:
            spec["prepare"] = f"python -m dopd.eval.prepare {self.name} --dataset_dir <dataset_dir>"
            return {"file_name": file_name or self.prepared_file, "columns": dict(ALPACA_COLUMNS), "eval": spec}
        entry: dict[str, Any] = {}
        if file_name:
            entry["file_name"] = file_name
        else:
            entry["hf_hub_url"] = self.hub_id
            if self.subset:
                entry["subset"] = self.subset
            entry["split"] = self.split
        entry["columns"] = dict(self.columns)
        entry["eval"] = spec
        return entry


# ------------------------------------------------------------------------------------------- image handling
class ImageSaver:
    """Writes row images (PIL images, {"bytes", "path"} dicts, or paths) to `<root>/<name>/` and returns paths
    relative to `root`'s parent (the dataset_dir, which the registry resolves relative image paths against)."""

    def __init__(self, dataset_dir: str, name: str) -> None:
        self.dataset_dir = dataset_dir
        self.rel_dir = os.path.join(PREPARED_DIR, name)
        os.makedirs(os.path.join(dataset_dir, self.rel_dir), exist_ok=True)

    def save(self, image: Any, stem: str) -> str:
        from PIL import Image

        if isinstance(image, dict):
            if image.get("bytes"):
                import io

                image = Image.open(io.BytesIO(image["bytes"]))
            elif image.get("path"):
                image = image["path"]
        if isinstance(image, str):
            image = Image.open(image)
        if not isinstance(image, Image.Image):
            raise ValueError(f"cannot read image of type {type(image).__name__}")
        rel = os.path.join(self.rel_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".png")
        image.convert("RGB").save(os.path.join(self.dataset_dir, rel))
        return rel


def format_options(options: Iterable[str]) -> str:
    return "\n".join(f"({CHOICE_LETTERS[i]}) {opt}" for i, opt in enumerate(options))


def _options_list(value: Any) -> list[str]:
    """MMMU stores options as a Python-literal string ("['a', 'b']"); MathVision as a list."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return [value]
    return [str(v) for v in value]


# ------------------------------------------------------------------------------------------- row converters
def convert_single_image(question_key: str, answer_key: str, image_key: str, id_key: Optional[str] = None,
                         options_key: Optional[str] = None) -> Converter:
    """One image shown before the question; options (if any) listed as (A) ... lines."""

    def convert(row: Row, saver: ImageSaver) -> Optional[Row]:
        rid = str(row.get(id_key)) if id_key and row.get(id_key) is not None else str(row["_index"])
        text = str(row[question_key]).strip()
        options = _options_list(row.get(options_key)) if options_key else []
        if options:
            text += "\n" + format_options(options)
        return {"instruction": "<image>" + text, "output": str(row[answer_key]).strip(),
                "images": [saver.save(row[image_key], rid)], "id": rid}

    return convert


def convert_mmmu(row: Row, saver: ImageSaver) -> Optional[Row]:
    """MMMU / MMMU-Pro standard: `<image k>` references in question and options become `<image>` placeholders
    (in order of appearance); images never referenced are shown first."""
    rid = str(row.get("id") or row["_index"])
    options = _options_list(row.get("options"))
    text = str(row["question"]).strip()
    if options:
        text += "\n" + format_options(options)
    available = {k: row.get(f"image_{k}") for k in range(1, 8) if row.get(f"image_{k}") is not None}
    order = [int(k) for k in re.findall(r"<image (\d+)>", text) if int(k) in available]
    leading = [k for k in sorted(available) if k not in order]
    text = re.sub(r"<image (\d+)>", lambda m: "<image>" if int(m.group(1)) in available else m.group(0), text)
    keys = leading + order
    images = [saver.save(available[k], f"{rid}_{i}") for i, k in enumerate(keys)]
    return {"instruction": "<image>" * len(leading) + text, "output": str(row["answer"]).strip(),
            "images": images, "id": rid}


def convert_mmmu_pro_vision(row: Row, saver: ImageSaver) -> Optional[Row]:
    """MMMU-Pro vision: the question and options are inside the image (a screenshot)."""
    rid = str(row.get("id") or row["_index"])
    return {"instruction": "<image>Answer the question shown in the image.", "output": str(row["answer"]).strip(),
            "images": [saver.save(row["image"], rid)], "id": rid}


def convert_logicvista(row: Row, saver: ImageSaver) -> Optional[Row]:
    """LogicVista's GitHub release: data/dataset.json (id -> {imagename, question, answer, ...}) + data/images/."""
    image = os.path.join(row["_source_dir"], "images", row["imagename"]) if row.get("_source_dir") else row["image"]
    rid = str(row.get("id") or row["_index"])
    return {"instruction": "<image>" + str(row["question"]).strip(), "output": str(row["answer"]).strip(),
            "images": [saver.save(image, rid)], "id": rid}


# ---------------------------------------------------------------------------------------------------- table
BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(bench: Benchmark) -> Benchmark:
    BENCHMARKS[bench.name] = bench
    return bench


# LLM benchmarks (hub, through the registry)
register_benchmark(Benchmark(
    "math500", "HuggingFaceH4/MATH-500", "test", columns={"prompt": "problem", "response": "answer"},
    eval={"extractor": "boxed", "metric": "numeric", "suffix": BOXED_SUFFIX},
))
register_benchmark(Benchmark(
    "aime25_i", "opencompass/AIME2025", "test", subset="AIME2025-I",
    columns={"prompt": "question", "response": "answer"},
    eval={"extractor": "boxed", "metric": "numeric", "suffix": BOXED_SUFFIX},
))
register_benchmark(Benchmark(
    "aime25_ii", "opencompass/AIME2025", "test", subset="AIME2025-II",
    columns={"prompt": "question", "response": "answer"},
    eval={"extractor": "boxed", "metric": "numeric", "suffix": BOXED_SUFFIX},
))
register_benchmark(Benchmark(
    "gsm8k", "openai/gsm8k", "test", subset="main", columns={"prompt": "question", "response": "answer"},
    eval={"extractor": "number", "metric": "numeric", "suffix": BOXED_SUFFIX},
))

# VLM benchmarks (prepared locally from the hub once)
register_benchmark(Benchmark(
    "realworldqa", "xai-org/RealworldQA", "test", is_vlm=True,
    convert=convert_single_image("question", "answer", "image"),
    eval={"extractor": "auto", "metric": "auto"},
))
register_benchmark(Benchmark(
    "mmstar", "Lin-Chen/MMStar", "val", is_vlm=True,
    convert=convert_single_image("question", "answer", "image", id_key="index"),
    eval={"extractor": "choice", "metric": "choice", "suffix": CHOICE_SUFFIX},
))
register_benchmark(Benchmark(
    "mathvision", "MathLLMs/MathVision", "test", is_vlm=True,
    convert=convert_single_image("question", "answer", "decoded_image", id_key="id", options_key="options"),
    eval={"extractor": "boxed", "metric": "auto", "suffix": BOXED_SUFFIX},
))
register_benchmark(Benchmark(
    "mathvision_mini", "MathLLMs/MathVision", "testmini", is_vlm=True,
    convert=convert_single_image("question", "answer", "decoded_image", id_key="id", options_key="options"),
    eval={"extractor": "boxed", "metric": "auto", "suffix": BOXED_SUFFIX},
))
register_benchmark(Benchmark(
    "dynamath", "DynaMath/DynaMath_Sample", "sample_variant1", is_vlm=True,
    convert=convert_single_image("question", "ground_truth", "decoded_image", id_key="id"),
    eval={"extractor": "boxed", "metric": "auto", "suffix": BOXED_SUFFIX},
))
register_benchmark(Benchmark(
    "logicvista", "github:Yijia-Xiao/LogicVista (data/dataset.json + data/images)", "all", is_vlm=True,
    convert=convert_logicvista,  # answers: a letter, a letter set ("A, C") or an option number ("3")
    eval={"extractor": "auto", "metric": "auto", "suffix": CHOICE_SUFFIX},
))
register_benchmark(Benchmark(
    "mmmu", "HuggingFaceM4/MMMU", "validation", is_vlm=True, convert=convert_mmmu,
    eval={"extractor": "auto", "metric": "auto", "suffix": CHOICE_SUFFIX},
))
register_benchmark(Benchmark(
    "mmmu_pro", "MMMU/MMMU_Pro", "test", subset="standard (10 options)", is_vlm=True, convert=convert_mmmu,
    eval={"extractor": "choice", "metric": "choice", "suffix": CHOICE_SUFFIX},
))
register_benchmark(Benchmark(
    "mmmu_pro_vision", "MMMU/MMMU_Pro", "test", subset="vision", is_vlm=True, convert=convert_mmmu_pro_vision,
    eval={"extractor": "choice", "metric": "choice", "suffix": CHOICE_SUFFIX},
))


# ---------------------------------------------------------------------------------------------- preparation
def _hub_rows(bench: Benchmark, source: Optional[str]) -> list[Row]:
    if bench.name == "logicvista":
        if not source:
            raise ValueError("logicvista has no hub copy: clone https://github.com/Yijia-Xiao/LogicVista and pass "
                             "--source <clone>/data")
        with open(os.path.join(source, "dataset.json"), encoding="utf-8") as fh:
            data = json.load(fh)
        return [{"id": key, "_source_dir": source, **value} for key, value in data.items()]
    import datasets

    table = datasets.load_dataset(source or bench.hub_id, name=bench.subset, split=bench.split)
    return table.to_list()


def prepare_benchmark(name: str, dataset_dir: str, rows: Optional[list[Row]] = None, source: Optional[str] = None,
                      limit: Optional[int] = None) -> str:
    """Convert a VLM benchmark to `<dataset_dir>/benchmarks/<name>.json` (+ images); returns the file path.
    `rows`: the benchmark's rows as the hub gives them (default: downloaded); `source`: another hub id or, for
    logicvista, the local `data` folder of its GitHub repository."""
    bench = BENCHMARKS[name]
    if bench.convert is None:
        raise ValueError(f"`{name}` reads directly from the hub through its registry entry; nothing to prepare")
    rows = rows if rows is not None else _hub_rows(bench, source)
    saver = ImageSaver(dataset_dir, name)
    out: list[Row] = []
    for index, row in enumerate(rows[:limit] if limit else rows):
        converted = bench.convert({"_index": index, **row}, saver)
        if converted is not None:
            out.append(converted)
    path = os.path.join(dataset_dir, bench.prepared_file)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1, ensure_ascii=False)
    return path


def registry_entries(names: Optional[Iterable[str]] = None) -> dict[str, dict[str, Any]]:
    return {name: BENCHMARKS[name].registry_entry() for name in (names or BENCHMARKS)}
