"""Tiny random-init models of every supported family, built offline from config (tests, smoke runs).

`build_tiny_model(family, out_dir, size, tokenizer, seed)` saves model + tokenizer (+ image processor and chat
template for VLMs) with `save_pretrained`, so `from_pretrained(out_dir)` and `load_adapter(out_dir)` work with no
hub. The architectures are the real transformers classes with small dimensions; a "teacher" is somewhat larger
than a "student" of the same family (hidden 96 vs 64, 3 vs 2 layers).

Tokenizers: "qwen2" is the real Qwen2 tokenizer (vocabulary 151,936) from `<repo>/../shared/external/qwen2_tokenizer`;
"bpe" is a small byte-level BPE trained here on a built-in corpus plus the family's special tokens (fast tests).
The model's vocabulary is rounded up to a multiple of 64 (like real checkpoints), so logits are wider than the
tokenizer.

`resolve_tiny_name` serves the `tiny:<family>[:<size>[:<tokenizer>]]` model names (`dopd.model.paths.SCHEMES`):
built once under `$DOPD_TINY_DIR` (default `models/tiny`), then loaded like any folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from dopd.hparams import ConfigError

logger = logging.getLogger("dopd")

FAMILIES = ("qwen2", "qwen3", "llama", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VLM_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]

# Qwen2-VL / Qwen2.5-VL's published chat template (images as <|vision_start|><|image_pad|><|vision_end|>).
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A trimmed Qwen3-VL-Instruct template (no default system prompt; tools/reasoning branches left out).
QWEN3_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. A picture shows a red car parked next to a tall green tree.
Question: how many apples are on the table? Answer: there are three apples on the table, and one banana.
Please describe the image in detail. The cat is sitting on a blue chair near the window in the kitchen.
You are a helpful assistant. Think step by step and give the final answer in a box.
Solve for x: 2x + 3 = 11. Subtract 3 from both sides to get 2x = 8, then divide by 2, so x = 4.
The bounding box of the dog is (120, 45), (380, 300). The person on the left holds an umbrella.
Hint: first count the objects in the top half of the image, then the bottom half, and add them up.
Mathematics, physics, chemistry and biology are natural sciences. Paris is the capital of France.
The train leaves at 10:30 and arrives at 14:45; the journey takes four hours and fifteen minutes.
def add(a, b): return a + b  # numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 -1
Yes. No. Maybe. Correct! Wrong? The answer is (A), (B), (C) or (D). Let's verify: 7 * 8 = 56.
"""

_SIZES = {
    # hidden, layers, heads, kv heads, intermediate, vision width, vision depth
    "student": dict(hidden=64, layers=2, heads=4, kv_heads=2, inter=128, v_hidden=32, v_depth=2),
    "teacher": dict(hidden=96, layers=3, heads=6, kv_heads=2, inter=192, v_hidden=48, v_depth=2),
}


def repo_root() -> Path:
    """The repository root (folder holding `src/dopd`)."""
    return Path(__file__).resolve().parents[3]


def shared_qwen2_tokenizer_dir() -> Path:
    """`<repo>/../shared/external/qwen2_tokenizer`, else `<repo>/shared/external/qwen2_tokenizer`."""
    root = repo_root()
    candidates = [root.parent / "shared" / "external" / "qwen2_tokenizer",
                  root / "shared" / "external" / "qwen2_tokenizer"]
    env = os.environ.get("DOPD_QWEN2_TOKENIZER")
    if env:
        candidates.insert(0, Path(env))
    for cand in candidates:
        if (cand / "tokenizer.json").is_file():
            return cand
    raise FileNotFoundError(
        "the Qwen2 tokenizer for tiny models was not found; looked in: "
        + ", ".join(str(c) for c in candidates)
        + " (set DOPD_QWEN2_TOKENIZER, or use tokenizer='bpe')"
    )


def _text_template() -> str:
    try:
        return shared_qwen2_tokenizer_dir().joinpath("chat_template.jinja").read_text(encoding="utf-8")
    except FileNotFoundError:
        # Qwen2.5's template without the tools branch
        return (
            "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
            "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are "
            "a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if not (loop.first "
            "and message.role == 'system') %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
            "'<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}"
            "{{- '<|im_start|>assistant\\n' }}{%- endif %}"
        )


def chat_template_for(family: str) -> str:
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return QWEN2_VL_TEMPLATE
    if family == "qwen3_vl":
        return QWEN3_VL_TEMPLATE
    return _text_template()


def _bpe_tokenizer(vocab_size: int = 600) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([line for line in _CORPUS.splitlines() if line.strip()] * 4, trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)


def _load_tokenizer(kind: str, family: str) -> Any:
    from transformers import AutoTokenizer

    if kind == "qwen2":
        tokenizer = AutoTokenizer.from_pretrained(str(shared_qwen2_tokenizer_dir()))
    elif kind == "bpe":
        tokenizer = _bpe_tokenizer()
    else:
        raise ValueError(f"tokenizer must be 'qwen2' or 'bpe', got {kind!r}")
    tokenizer.chat_template = chat_template_for(family)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def _round_up(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


def _text_kwargs(s: dict[str, int], vocab: int, ids: dict[str, int]) -> dict[str, Any]:
    return dict(
        vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["inter"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], max_position_embeddings=4096,
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=False,
    )


def tiny_config(family: str, size: str, vocab: int, ids: dict[str, int]) -> Any:
    """The transformers config of a tiny `family` model (`size` = student | teacher)."""
    import transformers as tf

    s = _SIZES[size]
    text = _text_kwargs(s, vocab, ids)
    head_dim = s["hidden"] // s["heads"]  # 16 for both sizes
    vl_ids = dict(image_token_id=ids["image"], video_token_id=ids["video"],
                  vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"])
    if family == "qwen2":
        return tf.Qwen2Config(**text)
    if family == "qwen3":
        return tf.Qwen3Config(**text, head_dim=head_dim)
    if family == "llama":
        return tf.LlamaConfig(**text)
    mrope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}  # sums to head_dim / 2
    if family == "qwen2_vl":
        vision = dict(depth=s["v_depth"], embed_dim=s["v_hidden"], hidden_size=s["hidden"], num_heads=2,
                      mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return tf.Qwen2VLConfig(text_config={**text, "rope_parameters": mrope}, vision_config=vision,
                                tie_word_embeddings=False, **vl_ids)
    if family == "qwen2_5_vl":
        vision = dict(depth=s["v_depth"], hidden_size=s["v_hidden"], intermediate_size=2 * s["v_hidden"],
                      num_heads=2, out_hidden_size=s["hidden"], patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=56, fullatt_block_indexes=[s["v_depth"] - 1])
        return tf.Qwen2_5_VLConfig(text_config={**text, "rope_parameters": mrope}, vision_config=vision,
                                   tie_word_embeddings=False, **vl_ids)
    if family == "qwen3_vl":
        vision = dict(depth=s["v_depth"], hidden_size=s["v_hidden"], intermediate_size=2 * s["v_hidden"],
                      num_heads=2, out_hidden_size=s["hidden"], patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=144, deepstack_visual_indexes=[0])
        text3 = {**text, "head_dim": head_dim,
                 "rope_parameters": {**mrope, "mrope_interleaved": True}}
        text3.pop("tie_word_embeddings")
        return tf.Qwen3VLConfig(text_config=text3, vision_config=vision, tie_word_embeddings=False, **vl_ids)
    raise ValueError(f"unknown tiny family {family!r}; choose from {', '.join(FAMILIES)}")


def _model_class(family: str) -> Any:
    import transformers as tf

    return {
        "qwen2": tf.Qwen2ForCausalLM, "qwen3": tf.Qwen3ForCausalLM, "llama": tf.LlamaForCausalLM,
        "qwen2_vl": tf.Qwen2VLForConditionalGeneration, "qwen2_5_vl": tf.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": tf.Qwen3VLForConditionalGeneration,
    }[family]


def build_tiny_model(family: str, out_dir: str | os.PathLike, size: str = "student", tokenizer: str = "bpe",
                     seed: int = 0) -> str:
    """Build a tiny random-init `family` model and save everything `from_pretrained` needs to `out_dir`.

    Returns `out_dir` as a string. Deterministic for a given (family, size, tokenizer, seed).
    """
    from transformers import GenerationConfig

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose from {', '.join(FAMILIES)}")
    if size not in _SIZES:
        raise ValueError(f"size must be 'student' or 'teacher', got {size!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _load_tokenizer(tokenizer, family)
    conv = tok.convert_tokens_to_ids
    ids = {"bos": conv("<|endoftext|>"), "eos": conv("<|im_end|>"), "pad": conv("<|endoftext|>"),
           "image": conv("<|image_pad|>"), "video": conv("<|video_pad|>"),
           "vision_start": conv("<|vision_start|>"), "vision_end": conv("<|vision_end|>")}
    vocab = _round_up(len(tok))
    config = tiny_config(family, size, vocab, ids)
    torch.manual_seed(seed)
    model = _model_class(family)(config)
    model.eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["eos"], ids["pad"]], pad_token_id=ids["pad"], bos_token_id=ids["bos"], do_sample=False,
    )
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    if family in VLM_FAMILIES:
        _save_image_processor(family, out, tok)
    (out / "dopd_tiny.json").write_text(json.dumps(
        {"family": family, "size": size, "tokenizer": tokenizer, "seed": seed}, indent=2), encoding="utf-8")
    return str(out)


#: The processing files of the published checkpoints, reproduced for the tiny stand-ins (same class names, pixel
#: bounds, normalisation, patch sizes), so loading and saving are exercised on the real layout: the template in
#: tokenizer_config.json and in the processor's chat_template.json, no processor_config.json.
_CLIP_MEAN, _CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def base_preprocessor_configs(family: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(preprocessor_config.json, video_preprocessor_config.json) as published for `family`'s checkpoints."""
    processor_class = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
                       "qwen3_vl": "Qwen3VLProcessor"}[family]
    if family == "qwen3_vl":  # Qwen/Qwen3-VL-*-Instruct
        common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                  "image_std": [0.5, 0.5, 0.5], "processor_class": processor_class}
        image = {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, **common,
                 "image_processor_type": "Qwen2VLImageProcessorFast"}
        video = {"size": {"longest_edge": 25165824, "shortest_edge": 4096}, **common,
                 "video_processor_type": "Qwen3VLVideoProcessor"}
        return image, video
    # Qwen/Qwen2-VL-*-Instruct, Qwen/Qwen2.5-VL-*-Instruct
    common = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
              "merge_size": 2, "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD}
    image = {**common, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": processor_class}
    video = {**common, "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": processor_class}
    return image, video


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_image_processor(family: str, out: Path, tok: Any) -> None:
    """The published checkpoints' processing files: preprocessor_config.json (the real pixel bounds),
    video_preprocessor_config.json, chat_template.json, and the template in tokenizer_config.json too."""
    image, video = base_preprocessor_configs(family)
    _write_json(out / "preprocessor_config.json", image)
    _write_json(out / "video_preprocessor_config.json", video)
    _write_json(out / "chat_template.json", {"chat_template": tok.chat_template})
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8"))
    tok_cfg["chat_template"] = tok.chat_template
    _write_json(tok_cfg_path, tok_cfg)
    (out / "chat_template.jinja").unlink(missing_ok=True)


def tiny_root() -> str:
    """The folder tiny models are built in: `$DOPD_TINY_DIR`, else `models/tiny` (relative to the working dir)."""
    return os.environ.get("DOPD_TINY_DIR", os.path.join("models", "tiny"))


def resolve_tiny_name(spec: str, role: str) -> str:
    """The folder of `tiny:<spec>` (`<family>[:<size>[:<tokenizer>]]`; size defaults to `role`, tokenizer to
    "bpe"): `<tiny_root>/<family>-<size>-<tokenizer>`, built on first use. Under several processes only local
    rank 0 builds (save_pretrained writes weights on the main process only); the others wait for it."""
    parts = spec.split(":")
    family = parts[0]
    size = parts[1] if len(parts) > 1 else ("teacher" if role == "teacher" else "student")
    tokenizer = parts[2] if len(parts) > 2 else "bpe"
    out_dir = os.path.join(tiny_root(), f"{family}-{size}-{tokenizer}")
    ready = os.path.join(out_dir, "dopd_tiny.json")  # written last by build_tiny_model
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        deadline = time.monotonic() + 600
        while not os.path.isfile(ready):
            if time.monotonic() > deadline:
                raise ConfigError(f"timed out waiting for local rank 0 to build {out_dir}")
            time.sleep(0.5)
    elif not os.path.isfile(ready):
        logger.info("building tiny %s %s model (%s tokenizer) in %s", family, size, tokenizer, out_dir)
        private = f"{out_dir}.building-{os.getpid()}"
        build_tiny_model(family, private, size=size, tokenizer=tokenizer)
        try:
            os.rename(private, out_dir)  # atomic: a reader never sees a half-written folder
        except OSError:  # another job finished first; the build is deterministic
            shutil.rmtree(private, ignore_errors=True)
    return out_dir
