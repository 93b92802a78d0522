"""Boxes from instance maps and masks, and the ``…_boxes.json`` format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cogimg.data.boxes import (
    boxes_from_instances,
    boxes_from_mask,
    boxes_to_array,
    instances_and_boxes,
    mm_box_to_voxel,
    read_boxes_json,
    scored_boxes_from_probabilities,
    voxel_box_to_mm,
    write_boxes_json,
)

# A 3 × 4 × 2 cube: voxels x 2..4, y 3..6, z 4..5 of a (10, 12, 14) grid.
SHAPE = (10, 12, 14)
CUBE = (slice(2, 5), slice(3, 7), slice(4, 6))
# Flipped x (-2 mm), 3 mm y, 1.5 mm z, shifted: faces x 1.5/4.5 → 7/1, y 2.5/6.5 → 2.5/14.5,
# z 3.5/5.5 → 12.25/15.25 (voxel centres at integer indices).
FLIPPED = np.array([[-2.0, 0, 0, 10.0], [0, 3.0, 0, -5.0], [0, 0, 1.5, 7.0], [0, 0, 0, 1]])


def _cube_instances() -> np.ndarray:
    instances = np.zeros(SHAPE, dtype=np.int16)
    instances[CUBE] = 1
    return instances


def test_box_of_cube_with_flipped_affine():
    (box,) = boxes_from_instances(_cube_instances(), FLIPPED, label="lesion")
    assert box["id"] == 1 and box["label"] == "lesion"
    assert box["voxel"] == [2, 3, 4, 5, 7, 6]
    np.testing.assert_allclose(box["mm"], [1.0, 2.5, 12.25, 7.0, 14.5, 15.25])
    np.testing.assert_allclose(box["centroid_vox"], [3.0, 4.5, 4.5])
    np.testing.assert_allclose(box["centroid_mm"], [-2 * 3 + 10, 3 * 4.5 - 5, 1.5 * 4.5 + 7])
    assert box["n_voxels"] == 24
    assert box["volume_ml"] == pytest.approx(24 * 9.0 / 1000.0)  # 2 × 3 × 1.5 mm³ per voxel


def test_box_of_cube_with_oblique_affine():
    # 45° about z, 1 mm: x = (i - j)/√2, y = (i + j)/√2 — all 8 corners matter here.
    c = s = 1 / np.sqrt(2)
    oblique = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    (box,) = boxes_from_instances(_cube_instances(), oblique)
    i0, i1, j0, j1 = 1.5, 4.5, 2.5, 6.5
    expected = [(i0 - j1) * c, (i0 + j0) * c, 3.5, (i1 - j0) * c, (i1 + j1) * c, 5.5]
    np.testing.assert_allclose(box["mm"], expected)


def test_boxes_follow_connectivity_and_min_voxels():
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels
    mask[3, 3, 3] = 1  # touches the cube only at a corner: joined under 26-, apart under 6-connectivity
    mask[7, 8, 9] = 1  # isolated single voxel
    assert [b["n_voxels"] for b in boxes_from_mask(mask, np.eye(4), connectivity=26)] == [9, 1]
    assert [b["n_voxels"] for b in boxes_from_mask(mask, np.eye(4), connectivity=6)] == [8, 1, 1]
    assert [b["n_voxels"] for b in boxes_from_mask(mask, np.eye(4), min_voxels=2)] == [9]
    with pytest.raises(ValueError, match="connectivity"):
        boxes_from_mask(mask, np.eye(4), connectivity=8)


def test_instances_and_boxes_on_a_region_match_the_full_grid():
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[CUBE] = 1
    mask[7:9, 1, 1] = 1
    full_instances, full_boxes = instances_and_boxes(mask, FLIPPED)
    region = (slice(1, 10), slice(0, 8), slice(0, 7))
    instances, boxes = instances_and_boxes(mask, FLIPPED, region=region)
    np.testing.assert_array_equal(instances, full_instances)
    assert boxes == full_boxes
    with pytest.raises(ValueError, match="outside `region`"):
        instances_and_boxes(mask, FLIPPED, region=(slice(0, 5), slice(0, 12), slice(0, 14)))


def test_boxes_array_is_monai_standard_mode():
    from monai.data.box_utils import box_area, box_iou

    instances = _cube_instances()
    instances[7:9, 8:10, 9:12] = 2
    boxes = boxes_from_instances(instances, FLIPPED)
    array = boxes_to_array(boxes)
    np.testing.assert_array_equal(box_area(array), [24, 12])  # voxel counts of full boxes
    np.testing.assert_allclose(box_iou(array, array), np.eye(2))


def test_voxel_box_to_mm_identity():
    assert voxel_box_to_mm([0, 0, 0, 1, 1, 1], np.eye(4)) == [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5]


def test_write_read_round_trip(tmp_path):
    boxes = boxes_from_instances(_cube_instances(), FLIPPED)
    path = write_boxes_json(tmp_path / "sub-01_boxes.json", boxes, SHAPE, FLIPPED, meta={"seed": 3})
    document = read_boxes_json(path)
    assert document["boxes"] == boxes
    assert document["shape"] == SHAPE
    np.testing.assert_array_equal(document["affine"], FLIPPED)
    assert document["meta"] == {"seed": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["sub-01_boxes.json"]  # no temp file left


def _write_document(tmp_path, mutate) -> str:
    document = {"format": "cogimg-boxes", "version": 1, "shape": list(SHAPE),
                "affine": FLIPPED.tolist(), "boxes": boxes_from_instances(_cube_instances(), FLIPPED)}
    mutate(document)
    path = tmp_path / "bad_boxes.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["boxes"][0].pop("mm"), r"boxes\[0\]\.mm: missing"),
    (lambda d: d.pop("affine"), r"affine: missing"),
    (lambda d: d["boxes"][0].update(voxel=[2, 3, 4, 11, 7, 6]), r"outside the grid shape"),
    (lambda d: d["boxes"][0].update(voxel=[2, 3, 4, 2, 7, 6]), r"x1=2 must be greater than x0=2"),
    (lambda d: d["boxes"][0].update(voxel=[2.0, 3, 4, 5, 7, 6]), r"expected 6 integers"),
    (lambda d: d["boxes"][0].update(mm=[0, 0, 0, 1, 1, 1]), r"does not match the voxel box"),
    (lambda d: d["boxes"].append(dict(d["boxes"][0])), r"boxes\[1\]\.id: duplicate id 1"),
    (lambda d: d.update(shape=[10, 12]), r"shape: expected 3 positive integers"),
    (lambda d: d.update(format="coco"), r"format: expected 'cogimg-boxes'"),
])
def test_read_rejects_invalid_documents(tmp_path, mutate, message):
    path = _write_document(tmp_path, mutate)
    with pytest.raises(ValueError, match=message) as error:
        read_boxes_json(path)
    assert "bad_boxes.json" in str(error.value)


def test_read_rejects_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "broken_boxes.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="broken_boxes.json: not valid JSON"):
        read_boxes_json(path)
    with pytest.raises(FileNotFoundError, match="missing_boxes.json"):
        read_boxes_json(tmp_path / "missing_boxes.json")


def test_write_refuses_invalid_boxes_and_keeps_existing_file(tmp_path):
    path = tmp_path / "sub-01_boxes.json"
    good = boxes_from_instances(_cube_instances(), FLIPPED)
    write_boxes_json(path, good, SHAPE, FLIPPED)
    bad = [dict(good[0], voxel=[0, 0, 0, 0, 1, 1])]
    with pytest.raises(ValueError, match="x1=0 must be greater than x0=0"):
        write_boxes_json(path, bad, SHAPE, FLIPPED)
    assert read_boxes_json(path)["boxes"] == good


# --------------------------------------------------------------------------- detection utilities
def test_monai_box_iou_nms_and_clipping_on_hand_computed_boxes():
    from monai.data.box_utils import box_iou, clip_boxes_to_image, non_max_suppression

    a = np.array([[0, 0, 0, 2, 2, 2], [1, 0, 0, 3, 2, 2], [10, 10, 10, 11, 11, 11]], dtype=float)
    # a0 ∩ a1 = 1 × 2 × 2 = 4 voxels, union 8 + 8 - 4 = 12.
    np.testing.assert_allclose(box_iou(a, a)[0], [1.0, 4 / 12, 0.0])
    keep = non_max_suppression(a, np.array([0.5, 0.9, 0.1]), nms_thresh=0.3)
    assert keep.tolist() == [1, 2]  # a0 overlaps the higher-scored a1 by IoU 1/3 > 0.3
    clipped, _ = clip_boxes_to_image(np.array([[-2, 1, 1, 4, 3, 20.0]]), (3, 5, 8))
    np.testing.assert_allclose(clipped, [[0, 1, 1, 3, 3, 8]])


@pytest.mark.parametrize("affine", [FLIPPED, np.diag([0.9, 1.1, 3.0, 1.0])])
def test_voxel_mm_round_trip(affine):
    voxel = [2, 3, 4, 5, 7, 6]
    np.testing.assert_allclose(mm_box_to_voxel(voxel_box_to_mm(voxel, affine), affine), voxel, atol=1e-9)


def test_scored_boxes_from_probabilities():
    probs = np.zeros((12, 12, 12), dtype=np.float32)
    probs[1:3, 1:3, 1:3] = 0.6
    probs[2, 2, 2] = 0.9
    probs[8:10, 8, 8] = 0.7
    probs[5, 5, 5] = 0.4  # below the threshold: no box
    boxes, scores = scored_boxes_from_probabilities(probs, threshold=0.5)
    np.testing.assert_array_equal(boxes, [[1, 1, 1, 3, 3, 3], [8, 8, 8, 10, 9, 9]])
    np.testing.assert_allclose(scores, [0.9, 0.7])
    boxes, scores = scored_boxes_from_probabilities(probs, threshold=0.5, min_voxels=3)
    assert boxes.shape == (1, 6) and scores.tolist() == pytest.approx([0.9])
    boxes, scores = scored_boxes_from_probabilities(np.zeros((4, 4, 4)))
    assert boxes.shape == (0, 6) and scores.shape == (0,)
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        scored_boxes_from_probabilities(np.zeros((4, 4)))
