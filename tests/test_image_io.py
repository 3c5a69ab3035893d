"""Image files in the forms users bring: each loads as the HxWx3 uint8 BGR image a viewer shows."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from detectres.data.datasets.coco import COCODataset
from detectres.data.image_io import ImageFileError, image_file_size, read_image_file
from detectres.data.samples import DetectionSamples


def test_grayscale_is_replicated(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, (12, 20), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image_file(str(tmp_path / "g.png"))
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    assert (out == gray[..., None]).all()


def test_rgba_drops_alpha_keeping_colour(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (10, 14, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image_file(str(tmp_path / "a.png"))
    assert out.shape == (10, 14, 3)
    assert (out == rgba[..., 2::-1]).all()  # RGB -> BGR, alpha gone


def test_16_bit_is_scaled_not_clipped(tmp_path):
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257  # 0..65535
    cv2.imwrite(str(tmp_path / "d.png"), levels)
    out = read_image_file(str(tmp_path / "d.png"))
    assert out.dtype == np.uint8
    assert (out[..., 0] == np.arange(256).reshape(16, 16)).all()  # not all 255, as a clipping reader gives


def test_palette_is_expanded(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=5)
    pal.save(tmp_path / "p.png")
    expected = np.asarray(pal.convert("RGB"))[..., ::-1]
    out = read_image_file(str(tmp_path / "p.png"))
    assert out.shape == (9, 11, 3) and (out == expected).all()
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 5


@pytest.mark.parametrize("orientation, turn", [(6, cv2.ROTATE_90_CLOCKWISE), (8, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                               (3, cv2.ROTATE_180)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)  # a red patch in the stored top-left corner
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[274] = orientation
    im.save(tmp_path / "e.jpg", exif=exif, quality=98)
    out = read_image_file(str(tmp_path / "e.jpg"))
    expected = cv2.rotate(rgb[..., ::-1].copy(), turn)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).mean() < 3  # JPEG noise only
    assert image_file_size(str(tmp_path / "e.jpg")) == out.shape[:2]


def test_exif_rotated_image_in_a_dataset_uses_the_displayed_size(tmp_path):
    im = Image.fromarray(np.full((40, 60, 3), 90, np.uint8))
    exif = im.getexif()
    exif[274] = 6
    im.save(tmp_path / "e.jpg", exif=exif)
    ann = {"images": [{"id": 1, "file_name": "e.jpg", "width": 40, "height": 60}],  # as a labelling tool shows it
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 30, 10, 20]}],
           "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    ds = COCODataset(image_dir=str(tmp_path), ann_file=str(tmp_path / "ann.json"), checks={"scan": "header"})
    assert not ds.report.problems
    item = DetectionSamples(records=ds)[0]
    assert item["image"].shape == (3, 60, 40) and item["gt_boxes"].tolist() == [[5.0, 30.0, 15.0, 50.0]]


def test_failures_name_the_file_and_kind(tmp_path):
    with pytest.raises(ImageFileError, match="nope.png: image file not found") as e:
        read_image_file(str(tmp_path / "nope.png"))
    assert e.value.kind == "missing_image"
    cv2.imwrite(str(tmp_path / "t.jpg"), np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) * 2 // 3])
    for read in (read_image_file, image_file_size):
        with pytest.raises(ImageFileError, match="t.jpg: truncated JPEG") as e:
            read(str(tmp_path / "t.jpg"))
        assert e.value.kind == "truncated_image"
    (tmp_path / "x.png").write_bytes(b"\x00garbage, not an image")
    for read in (read_image_file, image_file_size):
        with pytest.raises(ImageFileError, match="x.png") as e:
            read(str(tmp_path / "x.png"))
        assert e.value.kind == "unreadable_image"
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageFileError, match="empty.jpg: the file is empty"):
        read_image_file(str(tmp_path / "empty.jpg"))


def test_data_after_the_end_marker_is_not_truncation(tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "m.jpg"), image)
    with open(tmp_path / "m.jpg", "ab") as f:  # a phone's motion photo: a video after the JPEG
        f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    assert read_image_file(str(tmp_path / "m.jpg")).shape == (32, 48, 3)
    assert image_file_size(str(tmp_path / "m.jpg")) == (32, 48)
