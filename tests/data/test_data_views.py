"""Privilege processors and the two prompt views, with exact text, coordinates and pixels."""

from __future__ import annotations

import pytest
from data_testutils import make_image
from PIL import Image

from dopd.data import CONVENTIONS, Box, CanonicalSample, Crop, DefaultVision, PrivilegedRecord, build_views
from dopd.data.privilege import check_templates
from dopd.hparams import ConfigError, DataArguments

RED = (200, 30, 30)


class ResizingVision:
    """A stand-in adapter: its processor doubles each side."""

    min_image_size = 56

    def __init__(self, grounding: str) -> None:
        self.grounding = grounding

    def load_image(self, path: str) -> Image.Image:
        with Image.open(path) as im:
            return im.convert("RGB").resize((im.width * 2, im.height * 2))


def sample(tmp_path, privileged: PrivilegedRecord, privilege: list[str], n_images: int = 1,
           response: str | None = "It is red.\nAnswer: A") -> CanonicalSample:
    paths = [str(make_image(tmp_path / f"img{i}.png", (200, 100), RED)) for i in range(n_images)]
    return CanonicalSample(
        uid="t:0", dataset="t", index=0, source_file="t.json",
        messages=[{"role": "system", "content": "sys"},
                  {"role": "user", "content": "<image>" * n_images + "What is red?"}],
        response=response, images=paths, privileged=privileged, privilege=privilege,
    )


BOX = Box(label="red half", bbox=(20, 10, 100, 50))


@pytest.mark.parametrize("grounding, vision, expected", [
    ("qwen2_vl", DefaultVision(),
     "<|object_ref_start|>red half<|object_ref_end|><|box_start|>(100,100),(500,500)<|box_end|>"),
    ("qwen3_vl", DefaultVision(), '[\n  {"bbox_2d": [100, 100, 500, 500], "label": "red half"}\n]'),
    ("qwen2_5_vl", None, '[\n  {"bbox_2d": [40, 20, 200, 100], "label": "red half"}\n]'),
    ("plain", DefaultVision(),
     "Boxes are [x1, y1, x2, y2], scaled to 0-1000 of the image width and height.\nred half: [100, 100, 500, 500]"),
])
def test_boxes_text_in_each_convention(tmp_path, grounding, vision, expected):
    vision = ResizingVision(grounding) if vision is None else vision
    vision.grounding = grounding
    s = sample(tmp_path, PrivilegedRecord(boxes=[BOX]), ["boxes_text"])
    plain, priv = build_views(s, vision, DataArguments())
    assert priv.messages[-1]["content"] == (
        "<image>What is red?\n\n[Privileged regions]\n" + expected + "\n[End of regions]")
    assert priv.messages[0] == plain.messages[0] == {"role": "system", "content": "sys"}
    assert plain.messages[-1]["content"] == "<image>What is red?"
    assert priv.has_privilege and not plain.has_privilege


def test_conventions_coordinates_directly():
    assert CONVENTIONS["qwen2_vl"].coords((20, 10, 100, 50), (200, 100), (400, 200)) == [100, 100, 500, 500]
    assert CONVENTIONS["qwen2_5_vl"].coords((20, 10, 100, 50), (200, 100), (400, 200)) == [40, 20, 200, 100]
    # relative conventions use the ORIGINAL size whatever the resize; rounding is half up and clamped
    assert CONVENTIONS["qwen3_vl"].coords((0.1, 0, 200, 100), (200, 100), (28, 28)) == [1, 0, 1000, 1000]
    assert CONVENTIONS["qwen2_5_vl"].coords((1, 1, 199, 99), (200, 100), (280, 140)) == [1, 1, 279, 139]
    assert set(CONVENTIONS) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "plain"}


def test_boxes_text_groups_by_image_when_several(tmp_path):
    s = sample(tmp_path, PrivilegedRecord(boxes=[Box("b", (0, 0, 200, 100), image=1), BOX]), ["boxes_text"],
               n_images=2)
    vision = DefaultVision()
    vision.grounding = "qwen2_vl"
    _, priv = build_views(s, vision)
    assert priv.messages[-1]["content"].endswith(
        "[Privileged regions]\nImage 1:\n<|object_ref_start|>red half<|object_ref_end|>"
        "<|box_start|>(100,100),(500,500)<|box_end|>\nImage 2:\n<|object_ref_start|>b<|object_ref_end|>"
        "<|box_start|>(0,0),(1000,1000)<|box_end|>\n[End of regions]")


def test_hint_and_template(tmp_path):
    s = sample(tmp_path, PrivilegedRecord(hint=" Look left. "), ["hint"])
    plain, priv = build_views(s, None, DataArguments(hint_template=" <<{hint}>>"))
    assert priv.messages[-1]["content"] == "<image>What is red? <<Look left.>>"
    assert len(priv.images) == 1 and priv.images[0] is plain.images[0]
    with pytest.raises(ConfigError, match="hint_template"):
        check_templates(DataArguments(hint_template="no placeholder"))


def test_reference_processor(tmp_path):
    s = sample(tmp_path, PrivilegedRecord(), ["reference"])
    _, priv = build_views(s, None, DataArguments())
    assert priv.messages[-1]["content"] == (
        "<image>What is red?\n\n[Reference answer]\nIt is red.\nAnswer: A\n[End of reference answer]")
    assert priv.has_privilege


def test_boxes_draw_on_a_copy(tmp_path):
    s = sample(tmp_path, PrivilegedRecord(boxes=[Box("x", (120, 60, 180, 90))]), ["boxes_draw"])
    vision = ResizingVision("qwen2_vl")
    plain, priv = build_views(s, vision)
    assert priv.messages == plain.messages  # drawn, not written
    assert priv.has_privilege
    assert plain.images[0].size == priv.images[0].size == (400, 200)
    assert plain.images[0].getpixel((240, 180)) == (255, 255, 255)  # untouched
    assert priv.images[0].getpixel((240, 180)) != (255, 255, 255)  # box outline at the scaled bottom-left corner
    assert plain.images[0].tobytes() == vision.load_image(s.images[0]).tobytes()


def test_crops_are_cut_from_the_original_and_upscaled(tmp_path):
    s = sample(tmp_path, PrivilegedRecord(crops=[Crop((90, 0, 110, 10)), Crop((0, 0, 100, 100))]), ["crops"])
    vision = ResizingVision("plain")
    plain, priv = build_views(s, vision)
    assert len(plain.images) == 1 and len(priv.images) == 3
    small, big = priv.images[1], priv.images[2]
    assert small.size == (112, 56)  # 20x10 upscaled so the short side reaches min_image_size=56, aspect kept
    assert big.size == (100, 100)  # already large enough: the original pixels, not the resized image's
    assert small.getpixel((5, 28)) == RED and small.getpixel((106, 28)) == (255, 255, 255)
    assert priv.messages[-1]["content"] == (
        "<image>What is red?\n\n[Zoomed views]\n"
        "Zoomed view of region [450, 0, 550, 100] of image 1: <image>\n"
        "Zoomed view of region [0, 0, 500, 1000] of image 1: <image>\n[End of zoomed views]")
    assert priv.messages[-1]["content"].count("<image>") == len(priv.images)


def test_processors_apply_in_order_and_plain_view_has_no_trace(tmp_path):
    rec = PrivilegedRecord(hint="H", boxes=[BOX], crops=[Crop((0, 0, 50, 50))])
    s = sample(tmp_path, rec, ["hint", "boxes_text", "crops"])
    plain, priv = build_views(s)
    text = priv.messages[-1]["content"]
    assert text.index("[Privileged hint]") < text.index("[Privileged regions]") < text.index("[Zoomed views]")
    assert plain.messages == s.messages and len(plain.images) == 1
    assert "H" not in plain.messages[-1]["content"]
    # the override in data_args wins over the sample's list
    _, only_hint = build_views(s, None, DataArguments(privilege="hint"))
    assert "[Privileged regions]" not in only_hint.messages[-1]["content"] and len(only_hint.images) == 1


@pytest.mark.parametrize("record, names", [
    (PrivilegedRecord(), ["hint", "boxes_text", "crops"]),
    (PrivilegedRecord(hint="h"), ["boxes_text"]),  # p present, but no processor uses it
    (PrivilegedRecord(hint="h"), []),
])
def test_no_privilege_gives_equal_views(tmp_path, record, names):
    s = sample(tmp_path, record, names, response=None)
    plain, priv = build_views(s)
    assert priv == plain and priv.has_privilege is False
    assert priv.messages is not plain.messages  # a copy: editing one view never edits the other
