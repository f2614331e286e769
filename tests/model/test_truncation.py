"""`truncate_messages` with a fake length function: one token per character, plus each image's token count."""

from __future__ import annotations

from typing import Any

from dopd.model.adapters.prompt import IMAGE_PLACEHOLDER
from dopd.model.adapters.truncation import truncate_messages

IMG = IMAGE_PLACEHOLDER


def fake_length(messages: list[dict[str, Any]], image_tokens: list[int]) -> int:
    """Characters of text (placeholders excluded) + 2 per message (the template) + the images' tokens."""
    text = sum(len(str(m["content"]).replace(IMG, "")) for m in messages)
    return text + 2 * len(messages) + sum(image_tokens)


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_a_prompt_that_fits_is_returned_unchanged() -> None:
    messages = [msg("system", "sys"), msg("user", "hello")]
    out, images, truncated = truncate_messages(messages, [], [], 12, fake_length)  # 3 + 5 + 4 = 12
    assert out == messages and images == [] and not truncated


def test_earliest_non_system_turns_go_first_with_their_images() -> None:
    messages = [msg("system", "S"), msg("user", f"{IMG}aaaa"), msg("assistant", "bbbb"),
                msg("user", f"{IMG}cc"), msg("assistant", "dd"), msg("user", "q")]
    images, tokens = ["img1", "img2"], [10, 20]
    # full: 1 + 4 + 4 + 2 + 2 + 1 text, 12 template, 30 image = 56; without turn 1 (and img1): 41;
    # without turns 1-2: 33; without turns 1-3 (and img2): 11
    out, kept, truncated = truncate_messages(messages, images, tokens, 35, fake_length)
    assert truncated and out == [messages[0]] + messages[3:] and kept == ["img2"]
    out, kept, truncated = truncate_messages(messages, images, tokens, 11, fake_length)
    assert truncated and out == [messages[0], messages[4], messages[5]] and kept == []
    assert messages[1]["content"] == f"{IMG}aaaa" and images == ["img1", "img2"]  # the inputs are not modified


def test_the_last_turn_is_cut_from_the_left_never_through_an_image() -> None:
    messages = [msg("system", "S"), msg("user", f"abcd{IMG}efgh")]
    # 1 + 8 text + 4 template + 5 image = 18; 15 fits after cutting 3 characters from the left
    out, kept, truncated = truncate_messages(messages, ["img"], [5], 15, fake_length)
    assert truncated and kept == ["img"] and out == [messages[0], msg("user", f"d{IMG}efgh")]
    out, _, _ = truncate_messages(messages, ["img"], [5], 12, fake_length)  # the cut goes on past the image
    assert out[-1]["content"] == f"{IMG}gh"


def test_images_over_the_budget_alone_are_kept_whole_and_the_text_dropped() -> None:
    messages = [msg("user", f"look {IMG} here {IMG}")]
    out, kept, truncated = truncate_messages(messages, ["a", "b"], [50, 50], 60, fake_length)
    assert truncated and kept == ["a", "b"] and out == [msg("user", f"{IMG}{IMG}")]
    assert fake_length(out, [50, 50]) > 60  # an over-long prompt comes back; encode_prompt flags it
