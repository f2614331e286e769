"""Where a VLM's chat template comes from, and how teacher and student templates are compared (issue 11, item 6).

Published Qwen-VL checkpoints carry the template twice: in the processor's chat_template.json (the one vLLM & co.
render with) and in tokenizer_config.json, where older revisions hold a text-only template. The processor's
must win, for local folders and hub ids alike. Teacher/student compatibility compares what each adapter renders,
not adapter classes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from model_helpers import model_args, noise_image

from dopd.data import CanonicalSample
from dopd.data.views import PromptView
from dopd.hparams import DataArguments
from dopd.model import check_compatibility, load_adapter

# a text-only ChatML template, as older Qwen-VL revisions keep in tokenizer_config.json: image parts vanish
TEXT_ONLY_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
VIEW = PromptView(messages=[{"role": "user", "content": "<image>What colour dominates?"}])


def with_text_only_tokenizer_template(src: str, dst: Path) -> Path:
    """A copy of a tiny VLM whose tokenizer_config.json holds a text-only template (chat_template.json kept)."""
    shutil.copytree(src, dst)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = TEXT_ONLY_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    return dst


def processor_template(folder: Path) -> str:
    return json.loads((folder / "chat_template.json").read_text())["chat_template"]


def test_processor_template_wins_over_the_tokenizers(tiny_model, tmp_path) -> None:
    folder = with_text_only_tokenizer_template(tiny_model("qwen2_vl"), tmp_path / "vl")
    adapter = load_adapter(str(folder), model_args())
    assert adapter.chat_template == processor_template(folder)
    assert VISION in adapter.render(VIEW.messages)
    view = PromptView(messages=VIEW.messages, images=[adapter.load_image(noise_image(60, 40, 0))])
    assert adapter.encode_prompt(view).input_ids.count(adapter.image_token_id) > 0


def as_hub_cache(folder: Path, cache_dir: Path, repo_id: str) -> None:
    """Lay `folder` out as a downloaded hub repo in a huggingface_hub cache (read offline)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_processor_template_wins_for_hub_ids(tiny_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = with_text_only_tokenizer_template(tiny_model("qwen2_vl"), tmp_path / "vl")
    as_hub_cache(folder, tmp_path / "hub", "dopd-test/tiny-qwen2-vl")
    adapter = load_adapter("dopd-test/tiny-qwen2-vl", model_args(cache_dir=str(tmp_path / "hub")))
    assert adapter.chat_template == processor_template(folder)
    assert VISION in adapter.render(VIEW.messages)
    # saving a model loaded by hub id also restores the checkpoint's processing files
    out = tmp_path / "saved"
    adapter.processor.save_pretrained(str(out))
    for name in ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.json"):
        assert (out / name).read_bytes() == (folder / name).read_bytes(), name


def with_template(src: str, dst: Path, system: str) -> Path:
    """A copy of a tiny VLM whose processor template has another default system prompt."""
    shutil.copytree(src, dst)
    template = processor_template(dst).replace("You are a helpful assistant.", system)
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    return dst


def test_teacher_prompt_follows_its_own_rendered_template(tiny_model, tmp_path) -> None:
    from dopd.train.dataset import PromptViewDataset

    student = load_adapter(tiny_model("qwen2_vl", "student"), model_args())
    same = load_adapter(tiny_model("qwen2_vl", "teacher"), model_args())
    other = load_adapter(str(with_template(tiny_model("qwen2_vl", "teacher"), tmp_path / "t",
                                           "You are a strict examiner.")), model_args())
    assert type(other) is type(student)  # one adapter class, two templates
    path = str(tmp_path / "img.png")
    noise_image(80, 60, 0).save(path)
    sample = CanonicalSample(uid="d:0", dataset="d", index=0, source_file="d.json",
                             messages=[{"role": "user", "content": "<image>What colour dominates?"}], images=[path],
                             privilege=["hint"])
    data_args = DataArguments(cutoff_len=4096)
    item = PromptViewDataset([sample], student, data_args, teacher_adapter=other)[0]
    teacher_ids = other.tokenizer.decode(item.teacher.input_ids)
    assert "You are a strict examiner." in teacher_ids
    assert item.teacher.input_ids != item.plain.input_ids
    reused = PromptViewDataset([sample], student, data_args, teacher_adapter=same)[0]
    assert reused.teacher is reused.privileged  # identical encoding: the student's ids are reused

    from dopd.model.compat import same_prompt_encoding

    assert same_prompt_encoding(student, same)
    assert not same_prompt_encoding(student, other)
    check_compatibility(student, other, model_args())  # same family and end of turn: allowed, logged
