"""The CPU fast paths give torchvision's / the plain path's numbers: the gather RoIAlign (and its gradients),
res5's first projections moved before pooling, convolutions with their addition and ReLU fused, and
the half-precision spatial mean."""
import pytest
import torch
from torchvision.ops import roi_align

import detectres.modeling.backbones.norm as norm_module
from detectres.modeling.backbones.resnet import ResNet
from detectres.modeling.poolers import RoIPooler
from detectres.modeling.roi_align import roi_align_gather
from detectres.modeling.roi_heads.projection import project_then_pool, projects_first, spatial_mean


def random_rois(n: int, width: float, height: float, images: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 4, generator=g) * torch.tensor([width, height, width, height]) * 1.2 - 20
    boxes = torch.cat([xy[:, :2].minimum(xy[:, 2:]), xy[:, :2].maximum(xy[:, 2:])], dim=1)
    # the edge cases: whole image, outside, degenerate, sub-pixel, straddling the border, inverted
    boxes[:7] = torch.tensor([[0, 0, width, height], [-90, -80, -40, -30], [50, 50, 50, 50],
                              [3, 3, 3.4, 3.2], [width - 10, height - 10, width + 30, height + 40],
                              [600, 500, 10, 10], [400, 300, 100, 20]])  # (torchvision fails on one inverted axis)
    return torch.cat([torch.randint(0, images, (n, 1), generator=g).float(), boxes], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("output_size", [14, 7])
def test_gather_equals_torchvision_roi_align(aligned, sampling_ratio, stride, output_size):
    features = torch.randn(2, 24, 37, 50)
    rois = random_rois(120, 800, 592, images=2)
    ref = roi_align(features, rois, output_size, 1 / 16, sampling_ratio, aligned)[:, :, ::stride, ::stride]
    out = roi_align_gather(features.contiguous(memory_format=torch.channels_last), rois, output_size=output_size,
                           spatial_scale=1 / 16, sampling_ratio=sampling_ratio, aligned=aligned, stride=stride)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gather_gradients_equal_torchvision_roi_align(sampling_ratio):
    """Training pools with the gather too (on CPUs): autograd through it gives torchvision's gradients."""
    features = torch.randn(2, 16, 30, 41)
    rois = random_rois(80, 640, 480, images=2)
    grad_out = torch.randn(80, 16, 7, 7)
    x_ref = features.clone().requires_grad_(True)
    roi_align(x_ref, rois, 7, 1 / 16, sampling_ratio, True).backward(grad_out)
    x = features.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    pooler = RoIPooler(output_size=7, spatial_scale=1 / 16, sampling_ratio=sampling_ratio)
    assert pooler.gathers(x)
    pooler.pool_rois(x, rois).backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_projection_before_pooling_equals_pooling_first(stride_in_1x1):
    torch.manual_seed(0)
    resnet = ResNet(depth=50, widths=[32, 64, 128, 256], stride_in_1x1=stride_in_1x1, freeze_at=5).eval()
    for m in resnet.modules():  # non-trivial FrozenBN statistics
        if hasattr(m, "running_var"):
            m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1), m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    block, pooler = resnet.res5[0], RoIPooler(output_size=14, spatial_scale=1 / 16)
    features = torch.randn(2, 128, 30, 40).contiguous(memory_format=torch.channels_last)
    rois = random_rois(200, 640, 480, images=2)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    with torch.no_grad():
        assert projects_first(block, pooler, features, 200)
        assert not projects_first(block, pooler, features, 2)  # too few RoIs to pay for the whole map
        ref = block(pooler(features, boxes))
        out = project_then_pool(block, pooler, features, boxes)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_half_precision_spatial_mean():
    x = torch.randn(30, 64, 7, 7).contiguous(memory_format=torch.channels_last)
    out = spatial_mean(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.bfloat16().float().mean(dim=(2, 3)), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(spatial_mean(x), x.mean(dim=(2, 3)))


@pytest.mark.parametrize("depth,stride_in_1x1", [(18, True), (50, True), (50, False)])
def test_fused_convolutions_equal_the_plain_ops(monkeypatch, depth, stride_in_1x1):
    torch.manual_seed(0)
    resnet = ResNet(depth=depth, widths=[16, 32, 64, 128], stride_in_1x1=stride_in_1x1, freeze_at=2)
    for m in resnet.modules():
        if hasattr(m, "running_var"):
            m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1), m.running_mean.normal_(0, 0.1)
    resnet = resnet.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused = resnet(x)
        monkeypatch.setattr(norm_module, "FUSED_CONV", False)
        plain = resnet(x)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
    monkeypatch.setattr(norm_module, "FUSED_CONV", True)
    resnet.train()
    resnet(x).sum().backward()  # training takes the plain ops: gradients reach the trainable stages
    assert resnet.res5[0].conv1.weight.grad is not None and resnet.res2[0].conv1.weight.grad is None


def test_batched_post_processing_equals_a_loop_over_images_of_different_sizes():
    """Proposal selection and detections for three images of different sizes at once equal each image
    alone (and each image's boxes are clipped to its own size)."""
    from detectres.config import compose_config
    from detectres.modeling.build import build_model
    from detectres.modeling.postprocessing import (class_scores_and_boxes, flatten_class_matrix, merge_detections,
                                                   per_image_detections)

    torch.manual_seed(0)
    model = build_model(compose_config("train", ["model=quickstart"]).model, num_classes=3).eval()
    sizes = [(100, 120), (80, 160), (60, 60)]
    [anchors] = model.rpn.anchor_generator([(10, 12)])
    logits, deltas = torch.randn(3, anchors.shape[0]), torch.randn(3, anchors.shape[0], 4) * 0.3
    boxes, scores = model.rpn.select_proposals([anchors], [logits], [deltas], sizes, (2000, 50))
    for i, hw in enumerate(sizes):
        alone_boxes, alone_scores = model.rpn.select_proposals([anchors], [logits[i:i + 1]], [deltas[i:i + 1]], [hw],
                                                               (2000, 50))
        torch.testing.assert_close(boxes[i], alone_boxes[0], rtol=0, atol=0)
        torch.testing.assert_close(scores[i], alone_scores[0], rtol=0, atol=0)
        assert boxes[i][:, 2].max() <= hw[1] and boxes[i][:, 3].max() <= hw[0]
    counts = [len(b) for b in boxes]
    index = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    cls_logits, box_deltas = torch.randn(sum(counts), 4) * 2, torch.randn(sum(counts), 12) * 0.2
    heads = model.roi_heads
    batched = per_image_detections(cls_logits, box_deltas, torch.cat(boxes), index, sizes, heads.box_coder,
                                   score_thresh=0.05, nms_thresh=0.5, max_detections=20)
    for i, hw in enumerate(sizes):
        rows = index == i
        scored = class_scores_and_boxes(cls_logits[rows], box_deltas[rows], boxes[i], hw, heads.box_coder)
        alone = merge_detections(*flatten_class_matrix(*scored), score_thresh=0.05, nms_thresh=0.5,
                                 vote_thresh=None, max_detections=20)
        assert len(alone["scores"]) > 0
        for key in alone:
            torch.testing.assert_close(batched[i][key], alone[key], rtol=0, atol=0)


def small_frozen_resnet() -> ResNet:
    resnet = ResNet(depth=50, widths=[16, 32, 64, 128], freeze_at=5).eval()
    for m in resnet.modules():
        if hasattr(m, "running_var"):
            m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1), m.running_mean.normal_(0, 0.1)
    return resnet.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_autocast_runs_whether_or_not_onednn_fuses_it(monkeypatch, dtype):
    """oneDNN's fused convolution has no slow fallback for a dtype the CPU lacks: it must not be called then."""
    assert norm_module.fused_conv_runs(torch.float32)
    resnet, x = small_frozen_resnet(), torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        native = resnet(x)  # fused where this CPU can, plain convolutions elsewhere: never an error
        monkeypatch.setattr(norm_module, "fused_conv_runs", lambda d: d == torch.float32)
        plain = resnet(x)
    assert native.dtype == plain.dtype == dtype
    torch.testing.assert_close(native.float(), plain.float(), rtol=0.05, atol=0.05 * plain.float().abs().max().item())


def test_folded_weights_follow_loads_devices_and_inference_mode():
    torch.manual_seed(0)
    a, b = small_frozen_resnet(), small_frozen_resnet()
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = a(x)
        a.load_state_dict(b.state_dict())  # the cache must not keep a's old weights
        torch.testing.assert_close(a(x), b(x))
        assert not torch.equal(a(x), before)
        a.res2[0].conv1.norm.running_var.data.fill_(4.0)  # an edit that bumps no version ...
        a.float()  # ... is picked up after any _apply (.to(), .float(), ...)
        assert not torch.equal(a(x), b(x))
    with torch.inference_mode():
        c = small_frozen_resnet()  # inference tensors keep no version: folded each call, never cached
        torch.testing.assert_close(c(x), c(x))
