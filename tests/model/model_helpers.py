"""Small builders shared by the model tests (views, images, loaded models)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from dopd.data.views import PromptView
from dopd.hparams import ModelArguments

TEXT_FAMILIES = ("qwen2", "qwen3", "llama")
VLM_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
ALL_FAMILIES = TEXT_FAMILIES + VLM_FAMILIES


def model_args(**kw: Any) -> ModelArguments:
    base = dict(torch_dtype="float32", image_min_pixels=28 * 28, image_max_pixels=112 * 112)
    base.update(kw)
    return ModelArguments(**base)


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8), "RGB")


@lru_cache(maxsize=None)
def load(path: str, role: str = "student") -> tuple[Any, Any]:
    """(adapter, model) in float32, cached per test session (tests must not modify the model in place)."""
    from dopd.model import load_adapter, load_model

    adapter = load_adapter(path, model_args())
    model = load_model(path, model_args(), adapter=adapter, role=role)
    model.eval()
    return adapter, model


def views(adapter: Any, seed: int = 0) -> tuple[PromptView, PromptView]:
    """A plain view and a privileged one (hint text; for VLMs an extra zoomed-crop image)."""
    if adapter.is_vlm:
        img = adapter.load_image(noise_image(90, 60, seed))
        crop = adapter.load_image(img.crop((0, 0, 45, 30)).resize((adapter.min_image_size * 2, adapter.min_image_size)))
        plain = PromptView(messages=[{"role": "user", "content": "<image>How many apples are on the table?"}],
                           images=[img])
        priv = PromptView(messages=[{"role": "user", "content": "<image>How many apples are on the table?"
                                     "\n\nZoomed region: <image>\n[Privileged hint]\ncount the top half first"}],
                          images=[img, crop], has_privilege=True)
    else:
        plain = PromptView(messages=[{"role": "system", "content": "You are a helpful assistant."},
                                     {"role": "user", "content": "Solve for x: 2x + 3 = 11."}])
        priv = PromptView(messages=[{"role": "system", "content": "You are a helpful assistant."},
                                    {"role": "user", "content": "Solve for x: 2x + 3 = 11.\n\n[Privileged hint]\n"
                                     "subtract 3 from both sides first\n[End of hint]"}], has_privilege=True)
    return plain, priv


def varied_views(adapter: Any) -> list[PromptView]:
    """Three prompts of unequal lengths (and, for VLMs, unequal image counts/sizes)."""
    if adapter.is_vlm:
        a = adapter.load_image(noise_image(90, 60, 1))
        b = adapter.load_image(noise_image(40, 70, 2))
        c = adapter.load_image(noise_image(120, 50, 3))
        return [
            PromptView(messages=[{"role": "user", "content": "<image>Describe."}], images=[a]),
            PromptView(messages=[{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Compare <image> with <image>: which one is larger, "
                                  "and what colour dominates each picture?"}], images=[b, c]),
            PromptView(messages=[{"role": "user", "content": "No picture here, just count to five."}]),
        ]
    return [
        PromptView(messages=[{"role": "user", "content": "Hi"}]),
        PromptView(messages=[{"role": "system", "content": "Think step by step."},
                             {"role": "user", "content": "The train leaves at 10:30 and arrives at 14:45. "
                              "How long is the journey, in minutes?"}]),
        PromptView(messages=[{"role": "user", "content": "Paris is the capital of which country?"}]),
    ]
