"""Image resolution follows the checkpoint (issue 11, item 5).

The tiny VLMs carry the published checkpoints' preprocessor configs (Qwen2/2.5-VL: 3,136 .. 12,845,056 pixels;
Qwen3-VL: 65,536 .. 16,777,216), so these tests see what a user of the real checkpoints sees.
"""

from __future__ import annotations

import pytest
from model_helpers import noise_image
from PIL import Image

from dopd.data import CanonicalSample, build_views
from dopd.data.sample import parse_privileged
from dopd.hparams import ConfigError, DataArguments, ModelArguments
from dopd.model import load_adapter


def test_default_bounds_are_the_checkpoints(tiny_model) -> None:
    q3 = load_adapter(tiny_model("qwen3_vl"), ModelArguments())
    # a 1280x960 photo: 40 x 30 merged 32-px patches, as the checkpoint's own processor gives it
    image = q3.load_image(noise_image(1280, 960, 0))
    assert q3.image_token_counts([image]) == [1200]
    assert image.size == (1280, 960)
    assert q3.pixel_bounds == (65536, 16777216) == q3.checkpoint_pixels
    q2 = load_adapter(tiny_model("qwen2_vl"), ModelArguments())
    assert q2.pixel_bounds == (3136, 12845056)


def test_configured_bounds_win_and_a_small_max_lowers_the_min(tiny_model) -> None:
    q3 = tiny_model("qwen3_vl")
    assert load_adapter(q3, ModelArguments(image_min_pixels=3136, image_max_pixels=50176)).pixel_bounds == \
        (3136, 50176)
    small = load_adapter(q3, ModelArguments(image_max_pixels=12544))  # below the checkpoint's 65,536 minimum
    assert small.pixel_bounds == (12544, 12544)
    assert small.load_image(noise_image(1280, 960, 0)).width * small.load_image(noise_image(1280, 960, 0)).height \
        <= 12544
    with pytest.raises(ConfigError, match="image_min_pixels"):
        load_adapter(q3, ModelArguments(image_min_pixels=50176, image_max_pixels=12544))


def _crop_sample(path: str, bbox: list[int]) -> CanonicalSample:
    return CanonicalSample(uid="d:0", dataset="d", index=0, source_file="d.json",
                           messages=[{"role": "user", "content": "<image>What is in the corner?"}], images=[path],
                           privileged=parse_privileged({"crops": [bbox]}), privilege=["crops"])


@pytest.mark.parametrize("family, at_least", [("qwen2_vl", 200), ("qwen3_vl", 200)])
def test_small_crops_are_upscaled_to_a_meaningful_number_of_tokens(family, at_least, tiny_model, tmp_path) -> None:
    path = str(tmp_path / "img.png")
    noise_image(200, 150, 1).save(path)
    adapter = load_adapter(tiny_model(family), ModelArguments())
    _, priv = build_views(_crop_sample(path, [10, 10, 50, 40]), adapter, DataArguments())  # a 40x30 region
    crop = priv.images[1]
    assert abs(crop.width / crop.height - 40 / 30) < 0.02  # aspect kept
    tokens = adapter.image_token_counts([crop])[0]
    assert at_least <= tokens <= 300, tokens  # about 256 merged patches (CROP_MIN_TOKENS)
    # bounded by image_max_pixels (small demo bounds give small crops), and configurable
    small = load_adapter(tiny_model(family), ModelArguments(image_min_pixels=3136, image_max_pixels=12544))
    _, priv = build_views(_crop_sample(path, [10, 10, 50, 40]), small, DataArguments())
    assert priv.images[1].width * priv.images[1].height <= 12544 * 1.1
    custom = load_adapter(tiny_model(family), ModelArguments(crop_min_pixels=40000))
    assert custom.crop_min_pixels == max(40000, custom.min_pixels)


def test_exif_orientation_in_the_vlm_adapter(tiny_model, tmp_path) -> None:
    """A JPEG stored 200x100 with EXIF orientation 6 is displayed 100x200; the adapter loads it as displayed (the
    red square at displayed [10, 150, 90, 190] is where the boxes of the sample say it is)."""
    displayed = Image.new("RGB", (100, 200), (20, 20, 220))
    displayed.paste(Image.new("RGB", (80, 40), (220, 20, 20)), (10, 150))
    exif = Image.Exif()
    exif[0x0112] = 6
    displayed.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "photo.jpg", "JPEG", quality=95,
                                                        exif=exif.tobytes())
    adapter = load_adapter(tiny_model("qwen2_vl"), ModelArguments(image_min_pixels=3136, image_max_pixels=50176))
    image = adapter.load_image(str(tmp_path / "photo.jpg"))
    assert image.height > image.width  # portrait, as displayed
    w, h = image.size
    square = image.crop((round(w * 0.15), round(h * 0.78), round(w * 0.85), round(h * 0.92))).convert("RGB")
    pixels = list(square.getdata())
    red = sum(p[0] for p in pixels) / len(pixels)
    blue = sum(p[2] for p in pixels) / len(pixels)
    assert red > 150 and blue < 100, (red, blue)
