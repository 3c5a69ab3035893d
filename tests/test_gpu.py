"""GPU paths (skipped without CUDA; run by tools/gpu_check.sh on a lent GPU).

R101-C4 with the benchmark's deterministic weights (``init_weights(model, seed=0)``) on a real image
(coco8 000000000042.jpg, 600 px shortest side), stage by stage:

* CUDA fp32 (TF32 off) against the CPU: res4 features and the head's logits and deltas on the SAME
  proposals (the CPU's) within 1e-3 of the reference's largest magnitude; detections from those
  proposals all matched (same class, IoU >= 0.99); the whole ``model.inference`` with >= 95% of the
  CPU's detections matched one-to-one (same class, IoU >= 0.99, score within 5e-3). Why not all of
  them: random weights give the RPN thousands of nearly equal objectness scores on overlapping
  anchors, so an NMS decision on a near-tie can keep a neighbouring box instead. Relative noise of
  1e-5 on res4 (CPU, measured) already swaps the 10th detection for a neighbour (IoU 0.985); any
  real defect (decode, scaling, NMS, class order) mismatches most of them.
* fp16 and bf16 autocast against fp32, both on CUDA: bounds per dtype in ``AMP_BOUNDS`` (measured
  with CPU autocast on the same model and image: fp16 res4 2.8e-3, head 9e-4, bf16 2.0e-2 and
  7.6e-3; detections from the same proposals 100% matched at IoU 0.99). End to end, the RPN's
  near-ties decide more under low precision (bf16 keeps 72% of the proposals at IoU 0.9), so the
  whole pipeline is held to the same objects (IoU 0.7 for fp16, 0.5 for bf16) rather than the same
  boxes.

The classifier's weights are scaled by 10 after ``init_weights``: with its std 0.01 the softmax is
nearly flat (every detection scores 0.050-0.068, just over the 0.05 threshold), so scores would say
nothing and the threshold would decide the detections; scaled, they spread over 0.88-0.99.
"""
import copy
import os

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detectres.apps.benchmark_models import init_weights
from detectres.config import compose_config
from detectres.data.image_io import read_image_file
from detectres.modeling.build import build_model
from detectres.utils.amp import autocast_context
from detectres.utils.resize import resize_shortest_edge

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

IMAGE = os.path.join(os.path.dirname(__file__), "data", "coco8", "val", "000000000042.jpg")
CLASSIFIER_SCALE = 10.0
FP32_REL = 1e-3
# amp -> (res4 rel err, head rel err, end-to-end IoU, end-to-end fraction of the fp32 top 50)
AMP_BOUNDS = {"fp16": (1e-2, 5e-3, 0.7, 0.90), "bf16": (5e-2, 3e-2, 0.5, 0.80)}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference relative to the reference's largest magnitude."""
    ref = ref.detach().double().cpu()
    return ((out.detach().double().cpu() - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def matched_fraction(ref: dict, out: dict, *, iou: float, score_tol: float, top: int | None = None) -> float:
    """Fraction of ``ref``'s (top) detections matched one-to-one in ``out``: same class, IoU >= ``iou``,
    scores within ``score_tol``; greedy, best reference first, each to its highest-IoU candidate."""
    k = len(ref["scores"]) if top is None else min(top, len(ref["scores"]))
    if k == 0:
        return 1.0 if len(out["scores"]) == 0 else 0.0
    boxes, classes, scores = (out[n].detach().float().cpu() for n in ("pred_boxes", "pred_classes", "scores"))
    ious = box_iou(ref["pred_boxes"][:k].float().cpu(), boxes) if len(boxes) else torch.zeros(k, 0)
    taken = torch.zeros(len(boxes), dtype=torch.bool)
    found = 0
    for i in range(k):
        ok = ((classes == ref["pred_classes"][i].cpu()) & ~taken & (ious[i] >= iou)
              & ((scores - float(ref["scores"][i])).abs() <= score_tol))
        if ok.any():
            taken[torch.where(ok, ious[i], torch.full_like(ious[i], -1.0)).argmax()] = True
            found += 1
    return found / k


@torch.no_grad()
def run_stages(model, item: dict, proposals: list[torch.Tensor] | None = None, amp: str | bool = False) -> dict:
    """res4, the model's own proposals, head logits/deltas and detections on ``proposals`` (default: its
    own), and ``model.inference``'s detections; tensors on the CPU, fp32."""
    with autocast_context(model, amp):
        images = model.preprocess([item])
        features = model.backbone(images.tensor)
        own = model.rpn.inference(features, images.image_sizes)
        given = own if proposals is None else [p.to(features.device) for p in proposals]
        logits, deltas = model.roi_heads.forward_with_given_boxes(features, given, images.image_sizes)
        given_dets = model.roi_heads.inference(features, given, images.image_sizes)[0]
        detections = model.inference([item])[0]

    def cpu(x):
        return {k: cpu(v) for k, v in x.items()} if isinstance(x, dict) else (
            [cpu(v) for v in x] if isinstance(x, list) else (x.float() if x.is_floating_point() else x).cpu())

    return cpu({"features": features, "proposals": own, "logits": logits, "deltas": deltas,
                "given_detections": given_dets, "detections": detections})


@pytest.fixture(scope="module")
def tf32_off():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def r101():
    model = build_model(compose_config("train", ["model=r101_c4"]).model, num_classes=80)
    init_weights(model, seed=0)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(CLASSIFIER_SCALE)
    return model.eval()


@pytest.fixture(scope="module")
def image_item():
    image = resize_shortest_edge(read_image_file(IMAGE), 600, 1000)
    return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}


@pytest.fixture(scope="module")
def cpu_run(r101, image_item):
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # the GPU machine's cores; tests elsewhere keep 1
    try:
        return run_stages(r101, image_item)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def r101_cuda(r101):
    return copy.deepcopy(r101).cuda()


@pytest.fixture(scope="module")
def cuda_run(r101_cuda, image_item, cpu_run, tf32_off):
    return run_stages(r101_cuda, image_item, proposals=cpu_run["proposals"])


def test_cuda_res4_features_match_cpu(cpu_run, cuda_run):
    assert cuda_run["features"].shape == cpu_run["features"].shape
    assert rel_err(cuda_run["features"], cpu_run["features"]) <= FP32_REL


def test_cuda_head_outputs_on_the_same_proposals_match_cpu(cpu_run, cuda_run):
    assert cuda_run["logits"].shape == cpu_run["logits"].shape == (300, 81)
    assert rel_err(cuda_run["logits"], cpu_run["logits"]) <= FP32_REL
    assert rel_err(cuda_run["deltas"], cpu_run["deltas"]) <= FP32_REL


def test_cuda_detections_match_cpu(cpu_run, cuda_run):
    ref = cpu_run["given_detections"]
    assert len(ref["scores"]) >= 50  # the comparison has something to compare
    assert len(cuda_run["given_detections"]["scores"]) == len(ref["scores"])
    assert matched_fraction(ref, cuda_run["given_detections"], iou=0.99, score_tol=5e-3) == 1.0
    full = cpu_run["detections"]
    assert abs(len(cuda_run["detections"]["scores"]) - len(full["scores"])) <= 0.05 * len(full["scores"])
    assert matched_fraction(full, cuda_run["detections"], iou=0.99, score_tol=5e-3) >= 0.95


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_autocast_on_cuda_stays_close_to_fp32(amp, r101_cuda, image_item, cpu_run, cuda_run, tf32_off):
    feature_tol, head_tol, end_iou, end_fraction = AMP_BOUNDS[amp]
    out = run_stages(r101_cuda, image_item, proposals=cpu_run["proposals"], amp=amp)  # the proposals fp32 scored
    assert rel_err(out["features"], cuda_run["features"]) <= feature_tol
    assert rel_err(out["logits"], cuda_run["logits"]) <= head_tol
    assert rel_err(out["deltas"], cuda_run["deltas"]) <= head_tol
    assert matched_fraction(cuda_run["given_detections"], out["given_detections"], iou=0.9, score_tol=0.02,
                            top=50) >= 0.95
    assert matched_fraction(cuda_run["detections"], out["detections"], iou=end_iou, score_tol=0.05,
                            top=50) >= end_fraction
    assert all(torch.isfinite(v).all() for v in out["detections"].values() if v.is_floating_point())


def test_loaders_pin_memory_for_cuda_only():
    from detectres.data.datasets.coco import COCODataset
    from detectres.data.loader import build_test_loader, build_train_loader

    coco8 = os.path.join(os.path.dirname(__file__), "data", "coco8")
    dataset = COCODataset(image_dir=os.path.join(coco8, "val"),
                          ann_file=os.path.join(coco8, "annotations", "instances_val.json"))
    assert next(iter(build_test_loader(dataset, num_workers=1, device="cuda")))[0]["image"].is_pinned()
    assert next(iter(build_train_loader(dataset, batch_size=2, device="cuda")))[0]["image"].is_pinned()
    assert not next(iter(build_test_loader(dataset, device="cpu")))[0]["image"].is_pinned()


def quickstart_item() -> dict:
    return {"image": torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8),
            "gt_boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "gt_classes": torch.tensor([1]), "sample_seed": 3}


def test_training_step_on_cuda():
    cfg = compose_config("train", ["model=quickstart"])
    model = build_model(cfg.model, num_classes=3).cuda().train()
    losses = model([quickstart_item()])
    assert all(torch.isfinite(v) and v.device.type == "cuda" for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_on_cuda(amp):
    from detectres.engine.trainer import Trainer

    cfg = compose_config("train", ["model=quickstart"])
    model = build_model(cfg.model, num_classes=3).cuda().train()
    trainer = Trainer(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), data_loader=[],
                      max_iter=0, hooks=[], amp=amp, clip_grad_norm=5.0)
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        losses = trainer.run_step([quickstart_item()])
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


class PoisonedLoss(torch.nn.Module):
    """The model, with ``loss_cls`` made NaN while ``poison`` is set."""

    def __init__(self, model):
        super().__init__()
        self.model, self.poison = model, False

    def forward(self, batch):
        losses = self.model(batch)
        if self.poison:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses


def test_non_finite_fp16_step_is_skipped_after_backward_then_stops():
    from detectres.engine.trainer import NonFiniteLossError, Trainer

    cfg = compose_config("train", ["model=quickstart"])
    model = PoisonedLoss(build_model(cfg.model, num_classes=3).cuda().train())
    trainer = Trainer(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), data_loader=[],
                      max_iter=0, hooks=[], amp="fp16", max_nonfinite_steps=1)
    trainer.run_step([quickstart_item()])
    model.poison = True
    before, scale = [p.detach().clone() for p in model.parameters()], trainer.scaler.get_scale()
    losses = trainer.run_step([quickstart_item()])
    assert np.isnan(losses["loss_cls"]) and np.isnan(losses["total_loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # skipped: no update
    assert trainer.scaler.get_scale() == scale and all(p.grad is None for p in model.parameters())
    with pytest.raises(NonFiniteLossError, match=r"at iteration 0: .*loss_cls=nan"):
        trainer.run_step([quickstart_item()])


def test_sync_bn_converts_on_cuda():
    cfg = compose_config("train", ["model=quickstart"])
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_model(cfg.model, num_classes=3).cuda())
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
