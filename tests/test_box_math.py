import math

import torch

from detectres.modeling.anchors import AnchorGenerator, make_cell_anchors
from detectres.modeling.box_coder import BoxCoder
from detectres.modeling.matcher import Matcher
from detectres.modeling.sampling import subsample_labels
from detectres.structures.boxes import box_area, clip_boxes, nonempty_mask, pairwise_iou


def random_boxes(n, size=200.0):
    xy = torch.rand(n, 2) * size
    wh = torch.rand(n, 2) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_box_coding_round_trips():
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        coder = BoxCoder(weights=weights)
        src, dst = random_boxes(50), random_boxes(50)
        deltas = coder.encode(src, dst)
        assert torch.allclose(coder.decode(deltas, src), dst, atol=1e-3)


def test_box_coding_identity_and_clamp():
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    boxes = random_boxes(5)
    assert torch.allclose(coder.encode(boxes, boxes), torch.zeros(5, 4), atol=1e-6)
    huge = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    out = coder.decode(huge, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    # dw is clamped at log(1000/16): width at most 10 * 1000/16
    assert out[0, 2] - out[0, 0] <= 10 * 1000 / 16 + 1e-3


def test_decode_class_specific_layout():
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])  # class 1 shifted by one width
    out = coder.decode(deltas, boxes)
    assert out.shape == (1, 8)
    assert torch.allclose(out[0, :4], boxes[0]) and torch.allclose(out[0, 4:], torch.tensor([10.0, 0, 20, 10]))


def test_matcher_zero_ground_truth_is_all_background():
    matcher = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(torch.zeros(0, 17))
    assert labels.shape == (17,) and (labels == 0).all() and (matches == 0).all()


def test_matcher_thresholds_and_low_quality():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    preds = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],      # IoU 1 with gt0 -> fg
        [0.0, 0.0, 10.0, 20.0],      # IoU 0.5 -> ignore
        [50.0, 50.0, 60.0, 60.0],    # IoU 0 -> bg
        [100.0, 100.0, 110.0, 125.0],  # IoU 0.4 with gt1: best for gt1 -> low-quality fg
    ])
    iou = pairwise_iou(gt, preds)
    strict = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1])
    _, labels = strict(iou)
    assert labels.tolist() == [1, -1, 0, -1]
    lq = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)
    matches, labels = lq(iou)
    assert labels.tolist() == [1, -1, 0, 1]
    assert matches[3] == 1 and matches[0] == 0


def test_sampling_fractions_hold():
    labels = torch.cat([torch.full((1000,), 5), torch.full((3000,), 80), torch.full((200,), -1)])
    pos, neg = subsample_labels(labels, num_samples=512, positive_fraction=0.25, bg_label=80)
    assert len(pos) == 128 and len(neg) == 384
    assert (labels[pos] == 5).all() and (labels[neg] == 80).all()
    assert len(set(pos.tolist())) == 128
    # too few positives: the rest is filled with negatives
    few = torch.cat([torch.full((10,), 1), torch.zeros(1000, dtype=torch.long)])
    pos, neg = subsample_labels(few, num_samples=256, positive_fraction=0.5, bg_label=0)
    assert len(pos) == 10 and len(neg) == 246


def test_cell_anchors_size_major_unrounded():
    cell = make_cell_anchors([32, 64], [0.5, 1.0, 2.0])
    assert cell.shape == (6, 4)
    assert torch.allclose(cell[0], torch.tensor([-22.6274, -11.3137, 22.6274, 11.3137]), atol=1e-4)
    assert torch.allclose(cell[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    assert torch.allclose(cell[3], torch.tensor([-45.2548, -22.6274, 45.2548, 22.6274]), atol=1e-4)
    areas = box_area(cell)
    assert torch.allclose(areas[:3], torch.full((3,), 32.0 ** 2)) and torch.allclose(areas[3:], torch.full((3,), 64.0 ** 2))


def test_anchor_count_and_placement():
    gen = AnchorGenerator(sizes=[32, 64, 128, 256, 512], aspect_ratios=[0.5, 1.0, 2.0], strides=[16])
    [anchors] = gen([(5, 7)])
    assert anchors.shape == (5 * 7 * 15, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    grid = centres.view(5, 7, 15, 2)
    # every anchor at cell (y, x) is centred at (16x, 16y)
    assert torch.allclose(grid[2, 3], torch.tensor([48.0, 32.0]).expand(15, 2), atol=1e-4)
    assert torch.allclose(grid[4, 6], torch.tensor([96.0, 64.0]).expand(15, 2), atol=1e-4)


def test_box_helpers_degenerate():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 9.0], [0.0, 0.0, -3.0, 2.0], [-5.0, -5.0, 300.0, 50.0]])
    assert box_area(boxes).tolist() == [0.0, 0.0, 305.0 * 55.0]
    assert nonempty_mask(boxes).tolist() == [False, False, True]
    assert clip_boxes(boxes, (40, 100))[2].tolist() == [0.0, 0.0, 100.0, 40.0]
    iou = pairwise_iou(boxes[:1], boxes[:1])
    assert not torch.isnan(iou).any() and iou.item() == 0.0
    assert pairwise_iou(torch.zeros(0, 4), boxes).shape == (0, 3)
    assert math.isclose(pairwise_iou(boxes[2:], boxes[2:]).item(), 1.0)
