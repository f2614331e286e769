"""Adapters on tiny models of every family: encoding, batching, forward, generation, log-prob consistency."""

from __future__ import annotations

import sys

import pytest
import torch
from model_helpers import ALL_FAMILIES, VLM_FAMILIES, load, model_args, noise_image, varied_views, views

from dopd.data.views import PromptView
from dopd.model import EncodedPrompt, get_adapter_class, load_adapter
from dopd.model.adapters import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter, TextAdapter
from dopd.model.adapters import generation
from dopd.model.adapters.generation import cut_responses


def test_registry_picks_adapter_by_model_type() -> None:
    assert get_adapter_class("qwen2_vl") is Qwen2VLAdapter
    assert get_adapter_class("qwen2_5_vl") is Qwen2_5_VLAdapter
    assert get_adapter_class("qwen3_vl") is Qwen3VLAdapter
    assert get_adapter_class("qwen3") is TextAdapter
    assert get_adapter_class("some_new_causal_lm") is TextAdapter  # the fallback


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_encode_forward_generate(family: str, tiny_model) -> None:
    s_ad, student = load(tiny_model(family, "student"))
    t_ad, teacher = load(tiny_model(family, "teacher"), "teacher")
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert s_ad.grounding == (family if family in VLM_FAMILIES else "plain")
    plain, priv = views(s_ad)
    x, xp = s_ad.encode_prompt(plain, 1024), s_ad.encode_prompt(priv, 1024)
    assert isinstance(x, EncodedPrompt) and not x.truncated and len(xp) > len(x)
    if s_ad.is_vlm:
        assert x.mm_inputs["image_grid_thw"].shape == (1, 3) and xp.mm_inputs["image_grid_thw"].shape == (2, 3)
    responses = s_ad.generate(student, s_ad.collate_prompts([x, x]), max_new_tokens=6, do_sample=True)
    assert len(responses) == 2 and all(1 <= len(r) <= 6 for r in responses)
    for r in responses:
        assert all(t < s_ad.vocab_size for t in r)
        stops = [i for i, t in enumerate(r) if t in s_ad.stop_token_ids]
        assert stops in ([], [len(r) - 1])  # a stop token can only be the last one
    n_resp = sum(len(r) for r in responses)
    shapes = []
    for ad, model, prompt in ((s_ad, student, x), (s_ad, student, xp), (t_ad, teacher, t_ad.encode_prompt(priv))):
        batch, labels = ad.build_scoring_batch([prompt, prompt], responses)
        logits = ad.forward_logits(model, batch)
        assert logits.shape[:2] == labels.shape
        mask = labels != -100
        assert int(mask.sum()) == n_resp
        shapes.append(logits[mask].shape)
        hidden, head = ad.forward_hidden(model, batch)
        torch.testing.assert_close(head(hidden), logits, rtol=1e-5, atol=1e-5)
    assert shapes[0][0] == shapes[1][0] == shapes[2][0] == n_resp
    assert shapes[2][1] >= t_ad.vocab_size


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_generation_logprobs_match_teacher_forced_scoring(family: str, tiny_model) -> None:
    """Left-padded generation vs right-padded scoring, unequal prompt lengths, images: positions (incl.
    multimodal RoPE) must agree, so the sampled tokens' log-probs must too."""
    adapter, model = load(tiny_model(family, "student"))
    prompts = [adapter.encode_prompt(v, 1024) for v in varied_views(adapter)]
    assert len({len(p) for p in prompts}) == 3
    torch.manual_seed(0)
    responses, gen_logps = adapter.generate_with_logprobs(
        model, adapter.collate_prompts(prompts), max_new_tokens=8, do_sample=True, temperature=1.0, top_k=0,
        top_p=1.0)
    batch, labels = adapter.build_scoring_batch(prompts, responses)
    logps = adapter.forward_logits(model, batch).float().log_softmax(-1)
    for b in range(len(prompts)):
        mask = labels[b] != -100
        got = logps[b][mask].gather(-1, labels[b][mask][:, None])[:, 0]
        torch.testing.assert_close(got, torch.tensor(gen_logps[b]), rtol=0, atol=1e-4)


def test_generation_takes_plain_values(tiny_model) -> None:
    """`generation` runs on a model, its inputs, a GenerationConfig and token ids, with no adapter: the adapter
    calls it and nothing calls back (`ModelAdapter` -> `generation`, one way)."""
    adapter, model = load(tiny_model("qwen2", "student"))
    batch = adapter.collate_prompts([adapter.encode_prompt(v, 1024) for v in varied_views(adapter)])
    config = generation.build_generation_config(
        {"max_new_tokens": 5, "return_dict_in_generate": True, "output_logits": True},
        stop_ids=adapter.stop_token_ids, pad_id=adapter.pad_token_id, bos_id=None)
    got = generation.generate_with_logprobs(model, model, batch, config, stop_ids=adapter.stop_token_ids,
                                            vocab_size=adapter.vocab_size)
    assert got == adapter.generate_with_logprobs(model, batch, max_new_tokens=5)  # greedy: the same answers
    assert len(got[0]) == 3 and all(len(r) == len(lp) for r, lp in zip(*got))


def test_real_qwen2_tokenizer_vlm(tiny_model) -> None:
    adapter, model = load(tiny_model("qwen2_vl", "student", "qwen2"))
    assert adapter.vocab_size >= 151_643 and adapter.stop_token_ids[0] == 151645  # <|im_end|>
    prompts = [adapter.encode_prompt(v) for v in varied_views(adapter)[:2]]
    assert adapter.image_token_id == 151655 and 151655 in prompts[0].input_ids
    torch.manual_seed(1)
    responses, gen_logps = adapter.generate_with_logprobs(model, adapter.collate_prompts(prompts),
                                                          max_new_tokens=4, do_sample=True, top_k=0)
    batch, labels = adapter.build_scoring_batch(prompts, responses)
    logps = adapter.forward_logits(model, batch).float().log_softmax(-1)
    for b in range(2):
        mask = labels[b] != -100
        got = logps[b][mask].gather(-1, labels[b][mask][:, None])[:, 0]
        torch.testing.assert_close(got, torch.tensor(gen_logps[b]), rtol=0, atol=1e-4)


def test_scoring_labels_align_with_logits(tiny_model) -> None:
    adapter, _ = load(tiny_model("qwen2", "student"))
    p1, p2 = EncodedPrompt([5, 6, 7]), EncodedPrompt([8])
    batch, labels = adapter.build_scoring_batch([p1, p2], [[10, 11], [12, 13, 14]])
    pad = adapter.pad_token_id
    assert batch["input_ids"].tolist() == [[5, 6, 7, 10, 11], [8, 12, 13, 14, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert labels.tolist() == [[-100, -100, 10, 11, -100], [12, 13, 14, -100, -100]]
    gen = adapter.collate_prompts([p1, p2])
    assert gen["input_ids"].tolist() == [[5, 6, 7], [pad, pad, 8]]
    assert gen["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_responses_cut_after_first_stop_token(tiny_model) -> None:
    adapter, _ = load(tiny_model("qwen2", "student"))
    eos, pad = adapter.stop_token_ids[0], adapter.pad_token_id
    cut = cut_responses(torch.tensor([[3, 4, eos, pad, pad], [3, 4, 5, 6, 7], [eos, 9, 9, 9, 9]]),
                        adapter.stop_token_ids)
    assert cut == [[3, 4, eos], [3, 4, 5, 6, 7], [eos]]


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_plain_view_is_what_inference_sees(family: str, tiny_model) -> None:
    """encode_prompt == the processor + chat template a user would call at inference, byte for byte."""
    adapter, _ = load(tiny_model(family, "student"))
    img = adapter.load_image(noise_image(90, 60, 7))
    view = PromptView(messages=[{"role": "user", "content": "<image>What is shown?"}], images=[img])
    enc = adapter.encode_prompt(view)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    text = adapter.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ref = adapter.processor(text=[text], images=[img], return_tensors="pt")
    assert enc.input_ids == ref["input_ids"][0].tolist()
    torch.testing.assert_close(enc.mm_inputs["pixel_values"], ref["pixel_values"])
    assert "<|vision_start|><|image_pad|>" in adapter.tokenizer.decode(enc.input_ids)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_load_image_resized_like_processor(family: str, tiny_model) -> None:
    adapter, _ = load(tiny_model(family, "student"))
    factor = 28 if family == "qwen2_vl" else 32
    assert adapter.image_factor == factor
    img = adapter.load_image(noise_image(333, 97, 0).convert("L"))
    assert img.mode == "RGB" and img.width % factor == 0 and img.height % factor == 0
    assert img.width * img.height <= 112 * 112
    grid = adapter.encode_prompt(PromptView(messages=[{"role": "user", "content": "<image>"}],
                                            images=[img])).mm_inputs["image_grid_thw"][0].tolist()
    patch = factor // 2
    assert grid == [1, img.height // patch, img.width // patch]  # the processor kept the size
    assert adapter.min_image_size >= factor


def test_qwen_vl_utils_shim_leaves_no_torchvision() -> None:
    from dopd.model.adapters.qwen_vl.vision_utils import import_qwen_vl_utils

    module = import_qwen_vl_utils()
    assert hasattr(module, "fetch_image") and hasattr(module, "smart_resize")
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules


def test_truncation_drops_early_turns_then_cuts_text_never_images(tiny_model) -> None:
    adapter, _ = load(tiny_model("qwen2_vl", "student"))
    a = adapter.load_image(noise_image(90, 60, 1))
    b = adapter.load_image(noise_image(60, 90, 2))
    long_text = "The quick brown fox jumps over the lazy dog. " * 20
    view = PromptView(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>" + long_text},
        {"role": "assistant", "content": long_text},
        {"role": "user", "content": long_text + "<image> Question: what is it?"},
    ], images=[a, b])
    full = adapter.encode_prompt(view)
    n_b = adapter.encode_prompt(PromptView(messages=[{"role": "user", "content": "<image>"}], images=[b]))
    img_b_tokens = int(n_b.mm_inputs["image_grid_thw"][0].prod()) // 4
    assert not full.truncated
    for cutoff in (len(full) - 1, 120, 60):
        enc = adapter.encode_prompt(view, cutoff)
        assert enc.truncated and len(enc) <= cutoff
        assert enc.input_ids.count(adapter.image_token_id) == img_b_tokens  # the last turn's image, whole
        assert enc.mm_inputs["image_grid_thw"].shape[0] == 1
        text = adapter.tokenizer.decode(enc.input_ids)
        assert "Be brief." in text and "Question: what is it?" in text
    # the image alone is over budget: kept whole, marked truncated
    enc = adapter.encode_prompt(view, 5)
    assert enc.truncated and enc.input_ids.count(adapter.image_token_id) == img_b_tokens


def test_text_adapter_drops_images(tiny_model) -> None:
    adapter, _ = load(tiny_model("qwen3", "student"))
    view = PromptView(messages=[{"role": "user", "content": "<image>Describe it."}], images=[noise_image(8, 8, 0)])
    enc = adapter.encode_prompt(view)
    assert "<image>" not in adapter.tokenizer.decode(enc.input_ids) and enc.mm_inputs == {}


def test_unknown_model_path_is_a_config_error(tmp_path) -> None:
    from dopd.hparams import ConfigError

    with pytest.raises(ConfigError):
        load_adapter(str(tmp_path / "nope"), model_args())


@pytest.mark.parametrize("family", ["qwen2", "qwen3_vl"])
def test_encode_response_matches_rendered_assistant_turn(family: str, tiny_model) -> None:
    adapter, _ = load(tiny_model(family, "student"))
    view = PromptView(messages=[{"role": "user", "content": "What is 2+2?"}])
    prompt = adapter.encode_prompt(view).input_ids
    resp = adapter.encode_response("The answer is 4.")
    assert resp[-1] == adapter.end_of_turn_id == adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")
    full = adapter.tokenizer.apply_chat_template(
        adapter.to_template_messages(view.messages) + [{"role": "assistant", "content": "The answer is 4."}],
        tokenize=False)
    full_ids = adapter.tokenizer(full, add_special_tokens=False)["input_ids"]
    assert full_ids[:len(prompt) + len(resp)] == prompt + resp
