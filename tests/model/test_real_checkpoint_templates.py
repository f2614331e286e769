"""Real chat templates: Qwen3's thinking switch must reach every render (issue 11, item 1).

A stand-in Qwen3 checkpoint: the tiny Qwen3 model with the published Qwen3 chat template
(`fixtures/qwen3_chat_template.jinja`). With `enable_thinking: false` the template appends the empty
`<think>\\n\\n</think>\\n\\n` block to the generation prompt; without it, Qwen3 runs in thinking mode.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import transformers

from dopd.data.views import PromptView
from dopd.hparams import ModelArguments, parse_config
from dopd.model import load_adapter

QWEN3_TEMPLATE = (Path(__file__).parent / "fixtures" / "qwen3_chat_template.jinja").read_text(encoding="utf-8")
NO_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
REPO = Path(__file__).resolve().parents[2]


def qwen3_standin(src: str, dst: Path) -> str:
    """A copy of a tiny Qwen3 folder whose tokenizer carries the published Qwen3 chat template."""
    if not (dst / "config.json").is_file():
        shutil.copytree(src, dst, dirs_exist_ok=True)
        (dst / "chat_template.jinja").write_text(QWEN3_TEMPLATE, encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="module")
def qwen3_pair(tiny_model, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("qwen3_template")
    return (qwen3_standin(tiny_model("qwen3", "student"), root / "student"),
            qwen3_standin(tiny_model("qwen3", "teacher"), root / "teacher"))


def _args(**kw) -> ModelArguments:
    return ModelArguments(torch_dtype="float32", **kw)


def _view(hint: bool = False) -> PromptView:
    text = "What is 12 * 7? Give the answer on the last line."
    if hint:
        text += "\n\n[Privileged hint]\n12 * 7 = 10 * 7 + 2 * 7\n[End of hint]"
    return PromptView(messages=[{"role": "user", "content": text}], has_privilege=hint)


def test_qwen3_non_thinking_prompt_is_rendered(qwen3_pair) -> None:
    student, _ = qwen3_pair
    thinking = load_adapter(student, _args())
    assert "<think>" not in thinking.render(_view().messages)  # the template's default: thinking mode
    for args in (_args(enable_thinking=False), _args(chat_template_kwargs={"enable_thinking": False}),
                 _args(chat_template_kwargs='{"enable_thinking": true}', enable_thinking=False)):
        adapter = load_adapter(student, args)
        text = adapter.render(_view().messages)
        assert text.endswith(NO_THINK), text
        ids = adapter.encode_prompt(_view()).input_ids
        assert adapter.tokenizer.decode(ids).endswith(NO_THINK)


def test_enable_thinking_key_parses_and_reaches_the_recipe() -> None:
    cfg = parse_config(None, ["enable_thinking=false", "chat_template_kwargs={foo: 1}"], with_training=False)
    assert cfg.model.template_kwargs() == {"foo": 1, "enable_thinking": False}
    recipe = parse_config(str(REPO / "configs" / "recipes" / "qwen3_8b_to_1.7b_dopd.yaml"), with_training=False)
    assert recipe.model.enable_thinking is False


def test_every_render_gets_the_template_kwargs(qwen3_pair, monkeypatch) -> None:
    """Plain, privileged and teacher views, length estimates while truncating, the end-of-turn probe and eval:
    every `apply_chat_template` call carries enable_thinking=False."""
    from dopd.eval.workflow import generate_records
    from dopd.hparams import DataArguments
    from dopd.hparams.eval_args import EvalArguments
    from dopd.model import load_model
    from dopd.train.dataset import PromptViewDataset

    calls: list[dict] = []
    original = transformers.PreTrainedTokenizerBase.apply_chat_template

    def spy(self, conversation, *args, **kwargs):
        calls.append(dict(kwargs))
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "apply_chat_template", spy)
    student, teacher = qwen3_pair
    args = _args(enable_thinking=False)
    s_ad, t_ad = load_adapter(student, args), load_adapter(teacher, args)

    assert s_ad.encode_response("84") [-1] == s_ad.end_of_turn_id  # the end-of-turn probe renders a chat
    long_view = PromptView(messages=[{"role": "user", "content": "word " * 400 + "What is 12 * 7?"}])
    encoded = s_ad.encode_prompt(long_view, cutoff_len=64)  # truncation: length estimates render too
    assert encoded.truncated and s_ad.tokenizer.decode(encoded.input_ids).endswith(NO_THINK)

    from dopd.data import build_views, load_dataset_samples

    data_args = DataArguments(dataset="llm_demo", dataset_dir=str(REPO / "data"), cutoff_len=512, max_samples=2)
    samples = load_dataset_samples(data_args, ["llm_demo"])[:2]
    dataset = PromptViewDataset(samples, s_ad, data_args, teacher_adapter=t_ad)
    item = dataset[0]
    _, priv_view = build_views(samples[0], t_ad, data_args)
    teacher_own = t_ad.encode_prompt(priv_view, data_args.cutoff_len)  # the teacher rendering its own view
    for prompt in (item.plain, item.privileged, item.teacher, teacher_own):
        assert s_ad.tokenizer.decode(prompt.input_ids).endswith(NO_THINK)
    assert item.privileged.input_ids != item.plain.input_ids

    model = load_model(student, args, adapter=s_ad)
    records = generate_records(model, s_ad, samples, data_args, EvalArguments(eval_max_new_tokens=2))
    assert len(records) == 2
    assert calls and all(c.get("enable_thinking") is False for c in calls), calls
