"""`dopd-cli render`: what each model sees, printed from the very code the trainer uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dopd.hparams import parse_config
from dopd.train.render import render_samples

REPO = Path(__file__).resolve().parents[2]
QWEN3_TEMPLATE = REPO / "tests" / "model" / "fixtures" / "qwen3_chat_template.jinja"


def _run_cli(*args: str) -> int:
    from dopd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["render", *args])
    return exit_info.value.code


def test_render_text_demo_shows_the_three_views(capsys, tiny_model, tmp_path):
    student, teacher = tmp_path / "qwen3-student", tmp_path / "qwen3-teacher"
    for size, folder in (("student", student), ("teacher", teacher)):
        shutil.copytree(tiny_model("qwen3", size), folder)
        shutil.copy(QWEN3_TEMPLATE, folder / "chat_template.jinja")
    code = _run_cli(str(REPO / "configs" / "demo" / "llm_demo.yaml"), "--num-samples", "2",
                    f"model_name_or_path={student}", f"teacher_model_name_or_path={teacher}", "enable_thinking=false",
                    f"dataset_dir={REPO / 'data'}")
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("========== sample") == 2 and "llm_demo:0" in out and "llm_demo:1" in out
    assert out.count("student, plain view x:") == 2 and out.count("student, privileged view x+p:") == 2
    assert out.count("teacher view (x+p):") == 2
    assert "enable_thinking': False" in out
    # Qwen3 template, non-thinking: every view (student x, x+p, teacher) ends in the empty think block
    assert out.count("<|im_start|>assistant\n<think>\n\n</think>\n\n") == 6
    assert "[Privileged hint]" in out or "hint" in out.lower()


def test_render_vlm_counts_image_tokens(tiny_model):
    cfg = parse_config(str(REPO / "configs" / "demo" / "vlm_demo.yaml"), [f"dataset_dir={REPO / 'data'}"],
                       with_training=False)
    samples, header = render_samples(cfg, num_samples=1)
    (sample,) = samples
    plain, privileged, teacher = sample.views
    assert plain.num_images == 1 and plain.num_image_tokens > 0
    assert privileged.num_images >= plain.num_images and privileged.num_tokens > plain.num_tokens
    assert f"<|image_pad|>*{plain.num_image_tokens}" in plain.text  # one run per image, with its count
    from dopd.model import load_adapter

    adapter = load_adapter(header["student"], cfg.model)
    from dopd.data import build_views, load_dataset_samples

    raw = load_dataset_samples(cfg.data, cfg.data.dataset)[0]
    x, _ = build_views(raw, adapter, cfg.data)
    assert plain.num_tokens == len(adapter.encode_prompt(x, cfg.data.cutoff_len).input_ids)
    assert teacher.num_tokens == privileged.num_tokens


@pytest.mark.parametrize("dataset", ["vlm_demo", "vlm_demo_draw"])  # crops; boxes drawn on the image
def test_render_saves_exactly_the_images_each_view_gets(capsys, tiny_model, tmp_path, dataset):
    import numpy as np
    from PIL import Image

    from dopd.data import build_views, load_dataset_samples
    from dopd.model import load_adapter

    out_dir = tmp_path / "images"
    args = [str(REPO / "configs" / "demo" / "vlm_demo.yaml"), "--num-samples", "1", "--save-images", str(out_dir),
            f"dataset_dir={REPO / 'data'}", f"dataset={dataset}"]
    assert _run_cli(*args) == 0
    printed = capsys.readouterr().out
    cfg = parse_config(args[0], args[5:], with_training=False)
    adapter = load_adapter(render_samples(cfg, num_samples=1)[1]["student"], cfg.model)
    x, xp = build_views(load_dataset_samples(cfg.data, cfg.data.dataset)[0], adapter, cfg.data)
    expected = {f"001_x_{k + 1}.png": im for k, im in enumerate(x.images)}
    expected.update({f"001_xp_{k + 1}.png": im for k, im in enumerate(xp.images)})
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(expected)
    assert len(xp.images) >= len(x.images) >= 1
    for name, image in expected.items():
        assert str(out_dir / name) in printed
        saved = np.asarray(Image.open(out_dir / name).convert("RGB"))
        assert np.array_equal(saved, np.asarray(image.convert("RGB"))), name
    if dataset == "vlm_demo_draw":  # the drawn boxes are in the privileged image, not in the plain one
        assert not np.array_equal(np.asarray(Image.open(out_dir / "001_x_1.png")),
                                  np.asarray(Image.open(out_dir / "001_xp_1.png")))
