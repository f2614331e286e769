"""The benchmarks' in-memory data: prompts of a fixed length, reference answers of an exact token count, images, and
`CanonicalSample`s (text: a hint as privileged information; VLM: one image and two labelled boxes)."""

from __future__ import annotations

import os
from typing import Any, Optional

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
    """`count` PNGs (a red box on a coloured background) in `folder`, made once; their paths."""
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
