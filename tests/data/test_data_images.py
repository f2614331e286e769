"""Images as real users have them (issue 11, item 5): extreme aspect ratios and EXIF orientation.

- A region or image whose long side exceeds 200x its short side makes the Qwen-VL image processing raise
  (qwen-vl-utils and transformers both refuse it): check-data refuses it, naming file, sample and field, before
  anything trains.
- Camera JPEGs store pixels unrotated plus an EXIF orientation tag. Images are used as displayed
  (`ImageOps.exif_transpose`), and boxes and crops refer to the displayed image, everywhere the same way.
"""

from __future__ import annotations

from data_testutils import SHAREGPT, make_image, vqa_row
from PIL import Image

from dopd.data import CanonicalSample, DefaultVision, build_views, load_datasets, validate_dataset
from dopd.data.sample import parse_privileged
from dopd.data.vision import image_size, open_rgb
from dopd.hparams import DataArguments

RED, BLUE = (220, 20, 20), (20, 20, 220)


def report_for(registry, rows):
    path = registry.add("d", rows, SHAREGPT)
    (loaded,) = load_datasets(registry.args("d"))
    return validate_dataset(loaded), str(path)


def test_extreme_aspect_crop_is_refused_by_check_data(registry, tmp_path):
    make_image(tmp_path / "img.png", (600, 600))
    ok = vqa_row(["img.png"], {"crops": [[0, 0, 300, 300]]})
    thin = vqa_row(["img.png"], {"crops": [[10, 10, 12, 590]]})  # 2x580: aspect 290
    report, path = report_for(registry, [ok, thin])
    assert report.num_invalid == 1
    (issue,) = report.issues
    assert (issue.index, issue.field, issue.kind) == (1, "privileged.crops[0]", "box")
    assert "aspect ratio 290.0" in issue.reason and "200" in issue.reason
    assert str(issue).startswith(f"{path}: sample 1: field `privileged.crops[0]`: ")


def test_extreme_aspect_image_is_refused_by_check_data(registry, tmp_path):
    make_image(tmp_path / "img.png", (600, 600))
    make_image(tmp_path / "strip.png", (580, 2))
    report, path = report_for(registry, [vqa_row(["img.png"]), vqa_row(["strip.png"])])
    assert report.num_invalid == 1
    (issue,) = report.issues
    assert (issue.index, issue.field, issue.kind) == (1, "images[0]", "image")
    assert "aspect ratio 290.0" in issue.reason


def test_sub_pixel_crop_is_refused(registry, tmp_path):
    make_image(tmp_path / "img.png", (600, 600))
    report, _ = report_for(registry, [vqa_row(["img.png"], {"crops": [[10.2, 10, 10.4, 50]]})])
    (issue,) = report.issues
    assert issue.field == "privileged.crops[0]" and "less than one pixel" in issue.reason


def rotated_jpeg(path, orientation: int = 6):
    """A JPEG whose stored pixels are 200x100 (landscape) with EXIF orientation 6 (rotate 90 degrees clockwise
    to display): displayed it is 100x200, blue with a red square at displayed [10, 150, 90, 190]."""
    displayed = Image.new("RGB", (100, 200), BLUE)
    displayed.paste(Image.new("RGB", (80, 40), RED), (10, 150))
    stored = displayed.transpose(Image.Transpose.ROTATE_90)  # exif_transpose undoes it with ROTATE_270
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as raw:
        assert raw.size == (200, 100)
    return path


def mean_colour(image: Image.Image) -> tuple[int, ...]:
    pixels = list(image.convert("RGB").getdata())
    return tuple(round(sum(p[c] for p in pixels) / len(pixels)) for c in range(3))


def near(colour, target, tol=40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(colour, target))


def test_exif_orientation_applies_to_images_boxes_and_crops(registry, tmp_path):
    rotated_jpeg(tmp_path / "photo.jpg")
    assert image_size(str(tmp_path / "photo.jpg")) == (100, 200)
    assert open_rgb(str(tmp_path / "photo.jpg")).size == (100, 200)

    # check-data: the box lies inside the displayed image (100x200), though outside the stored one (200x100)
    row = vqa_row(["photo.jpg"], {"boxes": [{"label": "red square", "bbox": [10, 150, 90, 190]}],
                                  "crops": [[10, 150, 90, 190]]})
    report, _ = report_for(registry, [row])
    assert report.issues == []

    # views: the image as displayed; the crop cut from the displayed image holds the red square
    sample = CanonicalSample(uid="d:0", dataset="d", index=0, source_file="d.json",
                             messages=[{"role": "user", "content": "<image>What is red?"}],
                             images=[str(tmp_path / "photo.jpg")],
                             privileged=parse_privileged(row["privileged"]), privilege=["boxes_text", "crops"])
    plain, priv = build_views(sample, DefaultVision(), DataArguments())
    assert plain.images[0].size == (100, 200)
    assert near(mean_colour(plain.images[0].crop((10, 150, 90, 190))), RED)
    crop = priv.images[1]
    assert near(mean_colour(crop), RED), mean_colour(crop)
    assert "red square: [100, 750, 900, 950]" in priv.messages[0]["content"]  # 0-1000 of the displayed 100x200
