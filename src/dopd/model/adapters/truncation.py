"""Prompt truncation to `cutoff_len` tokens, as a pure function of the messages and a length function.

The length function is the adapter's `prompt_length` (render with the chat template, tokenise, count image tokens
without running the image processor); tests pass a fake one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .prompt import IMAGE_PLACEHOLDER

Messages = list[dict[str, Any]]
#: (messages, token count of each remaining image, in order) -> prompt length in tokens
LengthFn = Callable[[Messages, list[int]], int]


def truncate_messages(messages: Sequence[dict[str, Any]], images: Sequence[Any], image_tokens: Sequence[int],
                      cutoff_len: int, length: LengthFn) -> tuple[Messages, list[Any], bool]:
    """(messages, images, truncated) fitting `cutoff_len` tokens by `length`, each step only if still too long:

    1. drop the earliest non-system turns (with their images), one at a time, keeping the system message(s)
       and the last turn;
    2. cut text from the left of the last turn's text segments (image placeholders are kept whole, so a cut
       never goes through image tokens): the smallest cut that fits, by binary search on characters;
    3. if the images alone exceed the budget: keep every image block whole, drop all the last turn's text and
       return an over-long prompt.
    `images[i]` belongs to the i-th `<image>` placeholder and counts `image_tokens[i]` tokens.
    """
    messages, images = list(messages), list(images)
    if length(messages, list(image_tokens)) <= cutoff_len:
        return messages, images, False
    per_msg = [str(m["content"]).count(IMAGE_PLACEHOLDER) for m in messages]
    # 1. drop the earliest non-system turns, keeping the last message
    msgs, imgs, toks, pm = messages, images, list(image_tokens), per_msg
    while True:
        first = next((i for i, m in enumerate(msgs[:-1]) if m["role"] != "system"), None)
        if first is None:
            break
        start = sum(pm[:first])
        del imgs[start:start + pm[first]], toks[start:start + pm[first]]
        del msgs[first], pm[first]
        if length(msgs, toks) <= cutoff_len:
            return msgs, imgs, True
    # 2. cut text from the left of the last message, never through an image placeholder
    last = msgs[-1]
    segments = str(last["content"]).split(IMAGE_PLACEHOLDER)
    text_total = sum(len(s) for s in segments)

    def cut(n_chars: int) -> str:
        out, left = [], n_chars
        for seg in segments:
            drop = min(left, len(seg))
            out.append(seg[drop:])
            left -= drop
        return IMAGE_PLACEHOLDER.join(out)

    def with_last(text: str) -> Messages:
        return msgs[:-1] + [{**last, "content": text}]

    if length(with_last(cut(text_total)), toks) > cutoff_len:
        # 3. the images (and the template) alone are over budget: keep images whole, drop all text
        return with_last(cut(text_total)), imgs, True
    lo, hi = 0, text_total  # smallest cut that fits: binary search on characters
    while lo < hi:
        mid = (lo + hi) // 2
        if length(with_last(cut(mid)), toks) <= cutoff_len:
            hi = mid
        else:
            lo = mid + 1
    return with_last(cut(lo)), imgs, True
