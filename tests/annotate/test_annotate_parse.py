"""Grounding answers of each Qwen-VL family -> boxes in original pixels (the inverse of dopd.data.grounding)."""

from __future__ import annotations

import pytest

from dopd.annotate.parse import (
    ParseError, boxes_to_original, clip_box, crop_region, parse_boxes, to_original,
)
from dopd.data.grounding import CONVENTIONS, absolute_resized, relative_1000

# ------------------------------------------------------------------------------------------------ parsers


def test_qwen2_vl_special_tokens_several_objects_and_boxes():
    text = ("<|object_ref_start|>the red car<|object_ref_end|><|box_start|>(123,456),(789,999)<|box_end|> and "
            "<|object_ref_start|>people<|object_ref_end|><|box_start|>(10, 20),(30, 40)<|box_end|>"
            "<|box_start|>(50,60),(70,80)<|box_end|>")
    boxes = parse_boxes(text, "qwen2_vl")
    assert [(b.label, b.coords, b.image) for b in boxes] == [
        ("the red car", [123, 456, 789, 999], 0), ("people", [10, 20, 30, 40], 0), ("people", [50, 60, 70, 80], 0)]


def test_qwen2_vl_with_special_tokens_stripped_by_the_server():
    text = "the red car(123,456),(789,999)\nblue cup: (1,2),(3,4)"
    boxes = parse_boxes(text, "qwen2_vl")
    assert [(b.label, b.coords) for b in boxes] == [("the red car", [123, 456, 789, 999]), ("blue cup", [1, 2, 3, 4])]


def test_qwen2_vl_image_headings_pick_the_image():
    text = ("Image 1:\n<|object_ref_start|>a<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>\n"
            "Image 2:\n<|object_ref_start|>b<|object_ref_end|><|box_start|>(5,6),(7,8)<|box_end|>")
    assert [(b.label, b.image) for b in parse_boxes(text, "qwen2_vl")] == [("a", 0), ("b", 1)]


def test_qwen2_5_vl_json_in_code_fence():
    # the shape Qwen2.5-VL answers grounding prompts with
    text = '```json\n[\n\t{"bbox_2d": [135, 114, 1016, 672], "label": "dog"},\n\t{"bbox_2d": [1, 2, 3, 4], ' \
           '"label": "ball"}\n]\n```'
    boxes = parse_boxes(text, "qwen2_5_vl")
    assert [(b.label, b.coords) for b in boxes] == [("dog", [135, 114, 1016, 672]), ("ball", [1, 2, 3, 4])]


def test_qwen3_vl_json_with_trailing_text_single_object_and_image_index():
    text = 'Here you go: [{"bbox_2d": [211, 300, 523, 800], "label": "cat", "image": 2}]\nThe cat sits left.'
    (box,) = parse_boxes(text, "qwen3_vl")
    assert (box.label, box.coords, box.image) == ("cat", [211, 300, 523, 800], 1)
    (one,) = parse_boxes('{"bbox_2d": [1, 2, 3, 4], "label": "x"} done', "qwen3_vl")
    assert one.coords == [1, 2, 3, 4]


def test_json_cut_off_keeps_the_complete_objects():
    text = '```json\n[\n  {"bbox_2d": [10, 20, 30, 40], "label": "a"},\n  {"bbox_2d": [50, 60, 7'
    assert [b.label for b in parse_boxes(text, "qwen3_vl")] == ["a"]


@pytest.mark.parametrize("grounding,text", [
    ("qwen2_vl", "I cannot see any object."),
    ("qwen2_5_vl", "```json\n[]\n```"),
    ("qwen3_vl", '[{"label": "no coordinates"}]'),
    ("qwen3_vl", "not json at all {{{"),
])
def test_no_box_is_a_parse_error(grounding, text):
    with pytest.raises(ParseError):
        parse_boxes(text, grounding)


# ------------------------------------------------------------------------------------------------ coordinates
def test_relative_to_original_on_an_odd_size_by_hand():
    # 333 x 217: x = c * 333 / 1000, y = c * 217 / 1000
    assert to_original([100, 200, 500, 1000], "qwen2_vl", (333, 217)) == pytest.approx([33.3, 43.4, 166.5, 217.0])
    assert to_original([1, 999, 7, 3], "qwen3_vl", (333, 217)) == pytest.approx([0.333, 216.783, 2.331, 0.651])


def test_absolute_to_original_on_an_odd_size_by_hand():
    # Qwen2.5-VL resizes 333 x 217 to 336 x 224 (multiples of 28): x = c * 333 / 336, y = c * 217 / 224
    from dopd.model.adapters.qwen_vl.vision_utils import smart_resize

    assert smart_resize(217, 333, 28, 32 * 32, 768 * 768) == (224, 336)
    got = to_original([84, 56, 168, 224], "qwen2_5_vl", (333, 217), (336, 224))
    assert got == pytest.approx([83.25, 54.25, 166.5, 217.0])


@pytest.mark.parametrize("size", [(333, 217), (7, 1001), (1999, 3), (641, 479)])
def test_every_relative_coordinate_round_trips_exactly(size):
    for c in range(0, 1001):
        coords = [c, 1000 - c, c, 1000 - c]
        back = clip_box(to_original(coords, "qwen3_vl", size), size) or to_original(coords, "qwen3_vl", size)
        assert relative_1000(back, size) == coords


@pytest.mark.parametrize("size,view", [((333, 217), (336, 224)), ((1001, 7), (1008, 28)), ((97, 641), (84, 644))])
def test_every_absolute_coordinate_round_trips_exactly(size, view):
    for c in range(0, max(view) + 1):
        coords = [min(c, view[0]), min(c, view[1]), view[0] - min(c, view[0]), view[1] - min(c, view[1])]
        back = to_original(coords, "qwen2_5_vl", size, view)
        assert absolute_resized(back, size, view) == coords


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_written_by_the_renderer_and_read_back(name):
    """A box written by the privileged-view renderer (format_box) is read back to within the forward rounding."""
    size, view = (333, 217), (336, 224)
    original = [20.0, 10.0, 301.5, 200.0]
    text = CONVENTIONS[name].join([CONVENTIONS[name].format_box("red circle", original, size, view)])
    result = boxes_to_original(parse_boxes(text, name), name, [size], [view])
    (box,) = result.boxes
    assert box["label"] == "red circle" and box["image"] == 0
    unit = (size[0] / 1000, size[1] / 1000) if CONVENTIONS[name].relative else (size[0] / view[0], size[1] / view[1])
    for got, want, u in zip(box["bbox"], original, unit * 2):
        assert abs(got - want) <= u / 2 + 1e-9


def test_clipping_ordering_and_degenerate_boxes():
    size = (333, 217)
    raw = parse_boxes('[{"bbox_2d": [-50, -10, 1200, 500], "label": "all"},'
                      ' {"bbox_2d": [600, 900, 300, 100], "label": "swapped"},'
                      ' {"bbox_2d": [500, 500, 501, 900], "label": "thin"},'
                      ' {"bbox_2d": [1001, 10, 1100, 20], "label": "outside"},'
                      ' {"bbox_2d": [10, 10, 20, 20], "label": ""},'
                      ' {"bbox_2d": [10, 10, 20, 20], "label": "other image", "image": 3}]', "qwen3_vl")
    result = boxes_to_original(raw, "qwen3_vl", [size])
    assert result.boxes == [
        {"label": "all", "bbox": [0.0, 0.0, 333.0, 108.5], "image": 0},
        {"label": "swapped", "bbox": [99.9, 21.7, 199.8, 195.3], "image": 0},
    ]
    assert result.dropped == 4  # thin (0.333 px wide), outside, unlabelled, a missing image


def test_crop_region_grows_by_the_margin_and_stays_inside():
    assert crop_region([10.5, 20, 30.5, 40], (333, 217), 0.25) == [5, 15, 36, 45]
    assert crop_region([0, 0, 333, 217], (333, 217), 0.5) == [0, 0, 333, 217]
