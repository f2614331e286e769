"""Saved and exported VLM folders load with stock transformers, like the base checkpoint (issue 11, item 4).

The check that matters runs in a subprocess that never imports `dopd` (as vLLM, lmms-eval or VLMEvalKit would
load the folder). Limit of this machine: without torchvision, transformers 5.x cannot build the Qwen video
processors, so stock `AutoProcessor` raises an ImportError naming torchvision instead of returning the processor;
the test then asserts it resolved transformers' own processor class (not a bare tokenizer, as before the fix), and
asserts the full processor where torchvision is installed.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_helpers import model_args

from dopd.model import load_adapter
from dopd.model.export import run_export_cli
STOCK_PROCESSOR_NAMES = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
                         "qwen3_vl": "Qwen3VLProcessor"}
BASE_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.json")

STOCK_LOAD = r"""
import json, sys
import transformers
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer


def load(folder, with_model):
    out = {}
    ip = AutoImageProcessor.from_pretrained(folder)
    out["image_processor"] = type(ip).__name__
    out["size"] = [ip.size["shortest_edge"], ip.size["longest_edge"]]
    out["tokenizer_template"] = AutoTokenizer.from_pretrained(folder).chat_template
    if with_model:
        out["model"] = type(transformers.AutoModelForImageTextToText.from_pretrained(folder)).__name__
    try:
        proc = AutoProcessor.from_pretrained(folder)
        out["processor"] = type(proc).__name__
        out["processor_template"] = getattr(proc, "chat_template", None)
        ip = getattr(proc, "image_processor", None)
        out["processor_size"] = [ip.size["shortest_edge"], ip.size["longest_edge"]] if ip is not None else None
    except ImportError as err:
        out["processor_error"] = str(err)
    return out


results = {"base": load(sys.argv[1], False), "saved": load(sys.argv[2], True)}
results["dopd_imported"] = any(m == "dopd" or m.startswith("dopd.") for m in sys.modules)
print("RESULT" + json.dumps(results))
"""


def stock_load(base: str, saved: str) -> dict:
    """Load both folders with stock transformers in a fresh interpreter that does not import dopd."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", STOCK_LOAD, base, saved], capture_output=True, text=True,
                          env=env, cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def torchvision_available() -> bool:
    code = "import torchvision"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def assert_loads_like_base(base: str, out: str, family: str) -> None:
    stock = STOCK_PROCESSOR_NAMES[family]
    for name in BASE_FILES:  # the base checkpoint's files, byte for byte
        assert filecmp.cmp(os.path.join(base, name), os.path.join(out, name), shallow=False), name
    assert json.loads(Path(out, "processor_config.json").read_text())["processor_class"] == stock
    assert json.loads(Path(out, "tokenizer_config.json").read_text()).get("processor_class", stock) == stock
    result = stock_load(base, out)
    assert not result["dopd_imported"]
    got, want = result["saved"], result["base"]
    assert got["size"] == want["size"]  # the checkpoint's pixel bounds, not the training-time ones
    assert got["image_processor"] == want["image_processor"]
    base_template = json.loads(Path(base, "chat_template.json").read_text())["chat_template"]
    assert got["tokenizer_template"] == base_template
    assert got["model"].endswith("ForConditionalGeneration")
    if torchvision_available():
        assert got["processor"] == stock and got["processor_template"] == base_template
        assert got["processor_size"] == want["size"]
    else:
        # stock AutoProcessor resolved transformers' own class and asks for its video processor (torchvision)
        assert "processor" not in got, got
        assert "torchvision" in got["processor_error"].lower()


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_export_loads_with_stock_transformers(family: str, tiny_model, tmp_path) -> None:
    base = tiny_model(family)
    out = str(tmp_path / "exported")
    # training-time bounds far below the checkpoint's: they must not end up in the saved folder
    assert run_export_cli(None, [f"model_name_or_path={base}", f"export_dir={out}", "torch_dtype=float32",
                                 "image_min_pixels=3136", "image_max_pixels=12544"]) == 0
    assert_loads_like_base(base, out, family)
    # and dopd reads it back with the checkpoint's bounds
    assert load_adapter(out, model_args(image_min_pixels=None, image_max_pixels=None)).pixel_bounds == \
        load_adapter(base, model_args(image_min_pixels=None, image_max_pixels=None)).pixel_bounds


def test_trainer_checkpoint_processor_loads_with_stock_transformers(tiny_model, tmp_path) -> None:
    """What `trainer.save_model` / each checkpoint writes: `processing_class.save_pretrained`."""
    from transformers import Trainer, TrainingArguments

    from dopd.model import load_model

    base = tiny_model("qwen2_5_vl")
    adapter = load_adapter(base, model_args())
    model = load_model(base, model_args(), adapter=adapter)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True,
                                                          report_to="none"),
                      processing_class=adapter.processor)
    out = str(tmp_path / "saved")
    trainer.save_model(out)
    assert_loads_like_base(base, out, "qwen2_5_vl")
