"""Student and teacher models of a real architecture (Qwen2 text or Qwen2-VL), random init, for the benchmarks.

Built from a transformers config with the real Qwen2 tokenizer and vocabulary (151,936 logit rows), no hub. The
config, tokenizer (and image processor) are saved to a folder so `dopd.model.load_adapter` works; the weights stay
in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

QWEN2_VOCAB = 151936  # logit rows of the real Qwen2 / Qwen2-VL checkpoints (tokenizer: 151,665 ids)
HEAD_DIM = 64


@dataclass
class ModelSpec:
    """Family, width and depth of one model (head_dim 64, grouped-query attention 2:1)."""

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


def count_params(model: Any) -> int:
    """Number of parameters of `model`."""
    return sum(p.numel() for p in model.parameters())
