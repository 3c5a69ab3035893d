"""The benchmark application (``tools/benchmark.py``): speed of detectres against the same C4 model
assembled from torchvision's Faster R-CNN parts, on the CPU or a GPU (``runtime.device``).

Both models: ResNet-50/101 (stride on the 3x3, FrozenBN, stem + res2 frozen) cut after layer3/res4,
15 anchors (sizes 32..512 x ratios 0.5/1/2), 14x14 RoIAlign, layer4/res5 + average pool as the box
head, 81 classes, RPN 12000/2000 proposals (train) and 6000/300 (test), 512 RoIs per image,
the same input size and the same deterministic weight rules (real proposals, not an empty RPN).

Two comparisons: R50-C4 training step and inference at ``min_size`` (``runtime.amp`` applies to
both models), and R101-C4 inference at ``large.min_size`` (800): detectres in fp32 and, where the
device computes bf16 natively, in bf16, against torchvision in fp32. Timings are interleaved so
drift (thermal, other processes) hits all alike; GPU timings synchronize.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections import OrderedDict

import cv2
import numpy as np
import torch
import torchvision
from omegaconf import DictConfig
from torch import nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator as TVAnchorGenerator
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBN
from torchvision.ops import MultiScaleRoIAlign

from detectres.config import checkpoint_config, compose_config
from detectres.data.coco_names import COCO_CLASSES
from detectres.data.datasets.coco import COCODataset
from detectres.data.image_io import read_image_file
from detectres.modeling.backbones.norm import FrozenBatchNorm2d
from detectres.modeling.build import build_model
from detectres.utils.amp import amp_dtype, cpu_runs_natively, describe_cpu, effective_dtype
from detectres.utils.env import resolve_device
from detectres.utils.file_io import atomic_torch_save, atomic_write_text
from detectres.utils.resize import resize_shortest_edge
from detectres.weights.torchvision import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD


@torch.no_grad()
def init_weights(model: nn.Module, seed: int = 0) -> None:
    """The Detectron2 fixture's rules: FrozenBN U(0.2,0.6)/N(0,.05)/N(0,.05)/U(0.8,1.2), He-normal
    convs, RPN output convs std 0.01, Linear std 0.01 (box deltas 0.001), zero biases."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, (FrozenBatchNorm2d, TVFrozenBN)):
            n = m.weight.numel()
            m.weight.copy_(0.2 + 0.4 * torch.rand(n, generator=g))
            m.bias.copy_(0.05 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.05 * torch.randn(n, generator=g))
            m.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
        elif isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            rpn_out = any(k in name for k in ("objectness_logits", "anchor_deltas", "cls_logits", "rpn.head.bbox_pred"))
            std = 0.01 if rpn_out else (2.0 / fan_in) ** 0.5
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Linear):
            std = 0.001 if "bbox_pred" in name else 0.01
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            m.bias.zero_()


class Layer4Head(nn.Module):
    def __init__(self, layer4: nn.Module):
        super().__init__()
        self.layer4 = layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def build_torchvision_c4(min_size: int, max_size: int, depth: int = 50, post_nms_topk_test: int = 300) -> TVFasterRCNN:
    resnet = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth](
        weights=None, norm_layer=TVFrozenBN)
    body = nn.Sequential(OrderedDict(
        (k, getattr(resnet, k)) for k in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")))
    for p in [*resnet.conv1.parameters(), *resnet.layer1.parameters()]:
        p.requires_grad_(False)  # freeze_at=2, as the detectres model
    body.out_channels = 1024
    return TVFasterRCNN(
        body, num_classes=None, min_size=min_size, max_size=max_size,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        rpn_anchor_generator=TVAnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)),
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=post_nms_topk_test,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
        box_head=Layer4Head(resnet.layer4), box_predictor=FastRCNNPredictor(2048, 81),
        box_batch_size_per_image=512,
        size_divisible=1,  # no padding to /32: the same input size as detectres (C4 needs none)
    )


def build_detectres_c4(channels_last: bool = True, depth: int = 50, post_nms_topk_test: int = 300) -> nn.Module:
    """The torchvision-form (stride on the 3x3) R-C4 in torchvision's input convention."""
    cfg = compose_config("train", [
        f"model=r{depth}_c4", "model.backbone.stride_in_1x1=false", "model.input_format=RGB",
        f"model.pixel_mean={IMAGENET_RGB_MEAN}", f"model.pixel_std={IMAGENET_RGB_STD}",
        f"model.channels_last={str(channels_last).lower()}", f"model.rpn.post_nms_topk_test={post_nms_topk_test}"])
    return build_model(cfg.model, num_classes=80)


def annotated_image(image_path: str, ann_file: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HxWx3 BGR image, (G, 4) XYXY boxes, (G,) labels) of one image listed in a COCO file."""
    dataset = COCODataset(image_dir=os.path.dirname(image_path), ann_file=ann_file)
    name = os.path.basename(image_path)
    image_id = next((i for i in dataset.image_ids if dataset.coco.imgs[i]["file_name"] == name), None)
    if image_id is None:
        raise ValueError(f"{ann_file} has no image named {name}")
    return (read_image_file(image_path), *dataset.annotations(image_id))


def sample_inputs(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, min_size: int, max_size: int):
    """The same resized image and targets in each model's input convention."""
    h, w = image.shape[:2]
    resized = resize_shortest_edge(image, min_size, max_size)
    nh, nw = resized.shape[:2]
    scaled = torch.as_tensor(boxes, dtype=torch.float32) * torch.tensor([nw / w, nh / h, nw / w, nh / h])
    ours = {"image": torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))),
            "gt_boxes": scaled, "gt_classes": torch.as_tensor(classes, dtype=torch.long)}
    rgb = torch.from_numpy(np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1))).float() / 255.0
    theirs = (rgb, {"boxes": scaled.clone(), "labels": torch.as_tensor(classes, dtype=torch.long) + 1})
    return ours, theirs


def synchronize(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn, device: str = "cpu") -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def precision(model: nn.Module, amp: bool | str):
    """Autocast in ``amp``'s dtype on the model's device; off for fp32 and, after one warning, where the
    CPU would emulate the dtype (see :func:`detectres.utils.amp.effective_dtype`)."""
    device_type = next(model.parameters()).device.type
    dtype = effective_dtype(amp, device_type)
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def bf16_available(device: str) -> bool:
    """bf16 is compared only where the device computes in it natively."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return cpu_runs_natively(torch.bfloat16)


def make_steps(ours: nn.Module, theirs: nn.Module, ours_in: dict, theirs_in: tuple, amp: bool | str):
    opt_ours = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    opt_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step(model, opt, loss_fn):
        model.train()
        with precision(model, amp):
            loss = sum(loss_fn().values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {
        ("train", "detectres"): lambda: step(ours, opt_ours, lambda: ours([ours_in])),
        ("train", "torchvision"): lambda: step(theirs, opt_theirs, lambda: theirs([theirs_in[0]], [theirs_in[1]])),
        ("inference", "detectres"): inference_step(ours, lambda: ours.inference([ours_in]), amp),
        ("inference", "torchvision"): inference_step(theirs, lambda: theirs([theirs_in[0]]), amp),
    }


def inference_step(model: nn.Module, fn, amp: bool | str):
    def infer():
        model.eval()
        with torch.no_grad(), precision(model, amp):
            return fn()
    return infer


def interleaved_medians(steps: dict, *, rounds: int, warmup: int, device: str, log=print) -> dict:
    """Median seconds of each step, timed in turn round after round (drift hits all alike)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict = {k: [] for k in steps}
    for r in range(rounds):
        for key, fn in steps.items():
            times[key].append(timed(fn, device))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{' '.join(k)} {v[-1]:.3f}s" for k, v in times.items()))
    return {k: statistics.median(v) for k, v in times.items()}


def run_benchmark(*, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, min_size: int, max_size: int,
                  rounds: int, warmup: int = 1, amp: bool | str = False, device: str = "cpu", log=print) -> dict:
    """R50-C4: median seconds per training iteration and per inference image for both models, and ratios."""
    torch.manual_seed(0)
    ours, theirs = build_detectres_c4().to(device), build_torchvision_c4(min_size, max_size).to(device)
    init_weights(ours, seed=0)
    init_weights(theirs, seed=0)
    ours_in, theirs_in = to_device(*sample_inputs(image, boxes, classes, min_size, max_size), device)
    steps = make_steps(ours, theirs, ours_in, theirs_in, amp)
    n_ours, n_theirs = count_proposals(ours, steps[("inference", "detectres")]), \
        count_proposals(theirs, steps[("inference", "torchvision")])
    log(f"R50-C4 input {tuple(ours_in['image'].shape[1:])}; test proposals per image: detectres {n_ours}, "
        f"torchvision {n_theirs}")
    med = interleaved_medians(steps, rounds=rounds, warmup=warmup, device=device, log=log)
    return {
        "train_detectres": med[("train", "detectres")], "train_torchvision": med[("train", "torchvision")],
        "inference_detectres": med[("inference", "detectres")],
        "inference_torchvision": med[("inference", "torchvision")],
        "train_ratio": med[("train", "detectres")] / med[("train", "torchvision")],
        "inference_ratio": med[("inference", "detectres")] / med[("inference", "torchvision")],
    }


def to_device(ours: dict, theirs: tuple, device: str) -> tuple[dict, tuple]:
    moved = {k: v.to(device) for k, v in ours.items()}
    return moved, (theirs[0].to(device), {k: v.to(device) for k, v in theirs[1].items()})


def run_large_inference(*, image: np.ndarray, min_size: int, max_size: int, rounds: int, warmup: int,
                        device: str, proposals: int = 300, log=print) -> dict:
    """R101-C4 inference at ``min_size``: detectres fp32 and bf16 (where native) against the
    torchvision-assembled R101-C4 in fp32, interleaved; median seconds per image, ratios and the
    per-stage times of detectres."""
    torch.manual_seed(0)
    ours = build_detectres_c4(depth=101, post_nms_topk_test=proposals).to(device).eval()
    theirs = build_torchvision_c4(min_size, max_size, depth=101, post_nms_topk_test=proposals).to(device).eval()
    init_weights(ours, seed=0)
    init_weights(theirs, seed=0)
    ours_in, theirs_in = to_device(*sample_inputs(image, np.zeros((0, 4)), np.zeros(0), min_size, max_size), device)
    modes = ["fp32", "bf16"] if bf16_available(device) else ["fp32"]
    steps = {("detectres", m): inference_step(ours, lambda: ours.inference([ours_in]), m == "bf16" and "bf16")
             for m in modes}
    steps[("torchvision", "fp32")] = inference_step(theirs, lambda: theirs([theirs_in[0]]), False)
    counts = (count_proposals(ours, steps[("detectres", "fp32")]), count_proposals(theirs, steps[("torchvision", "fp32")]))
    log(f"R101-C4 input {tuple(ours_in['image'].shape[1:])}; test proposals per image: detectres {counts[0]}, "
        f"torchvision {counts[1]}; precisions compared: {', '.join(modes)}")
    med = interleaved_medians(steps, rounds=rounds, warmup=warmup, device=device, log=log)
    reference = med[("torchvision", "fp32")]
    out = {"torchvision_fp32": reference, "input": list(ours_in["image"].shape[1:]), "proposals": list(counts),
           "torchvision_input": list(theirs.transform(theirs_in[0:1])[0].tensors.shape[-2:])}
    for m in modes:
        out[f"detectres_{m}"] = med[("detectres", m)]
        out[f"ratio_{m}"] = med[("detectres", m)] / reference
        out[f"stages_{m}"] = stage_times(ours, ours_in, m == "bf16" and "bf16", device)
    return out


def stage_times(model: nn.Module, inputs: dict, amp: bool | str, device: str, reps: int = 2) -> dict[str, float]:
    """Median seconds of the detector's stages on one input: backbone, RPN, RoI heads (with post-processing)."""
    times: dict[str, list[float]] = {"backbone": [], "rpn": [], "roi_heads": []}
    with torch.no_grad(), precision(model, amp):
        for _ in range(reps):
            images = model.preprocess([inputs])
            out = {}
            times["backbone"].append(timed(lambda: out.update(f=model.backbone(images.tensor)), device))
            times["rpn"].append(timed(lambda: out.update(p=model.rpn.inference(out["f"], images.image_sizes)), device))
            times["roi_heads"].append(timed(lambda: model.roi_heads.inference(out["f"], out["p"], images.image_sizes),
                                            device))
    return {k: statistics.median(v) for k, v in times.items()}


def count_proposals(model: nn.Module, infer) -> int:
    """Proposals scored by the box predictor in one inference (one row of box features each, in both models)."""
    seen = []
    handle = model.roi_heads.box_predictor.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    try:
        infer()
    finally:
        handle.remove()
    return seen[0]


def main(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Print both comparisons and end with the ratio lines; write ``benchmark.json`` to ``runtime.output_dir``."""
    torch.set_num_threads(cfg.runtime.num_threads or os.cpu_count() or 1)
    device, amp = resolve_device(cfg.runtime.device), cfg.runtime.amp
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else describe_cpu()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}: {where}")
    image, boxes, classes = annotated_image(cfg.image, cfg.ann_file)
    r = run_benchmark(image=image, boxes=boxes, classes=classes, min_size=cfg.min_size, max_size=cfg.max_size,
                      rounds=cfg.rounds, warmup=cfg.warmup, amp=amp, device=device)
    large = None
    if cfg.large.rounds > 0:
        large = run_large_inference(image=read_image_file(cfg.large.image), min_size=cfg.large.min_size,
                                    max_size=cfg.large.max_size, rounds=cfg.large.rounds, warmup=cfg.warmup,
                                    device=device, proposals=cfg.large.proposals)
    print_tables(r, large, amp)
    if cfg.runtime.output_dir:
        os.makedirs(cfg.runtime.output_dir, exist_ok=True)
        report = {**r, "large": large, "min_size": cfg.min_size, "threads": torch.get_num_threads(), "amp": amp,
                  "device": where}
        atomic_write_text(json.dumps(report, indent=2), os.path.join(cfg.runtime.output_dir, "benchmark.json"))
    print_ratio_lines(r, large, device)
    return {**r, "large": large}


def print_tables(r: dict, large: dict | None, amp: bool | str) -> None:
    print(f"R50-C4 ({amp_dtype(amp) or 'fp32'}){'':<8}{'detectres':>12}{'torchvision':>13}")
    print(f"{'train s/iter':<22}{r['train_detectres']:>12.3f}{r['train_torchvision']:>13.3f}")
    print(f"{'inference s/img':<22}{r['inference_detectres']:>12.3f}{r['inference_torchvision']:>13.3f}")
    if large is None:
        return
    print(f"R101-C4 inference s/img at {large['input'][0]}x{large['input'][1]}: torchvision fp32 "
          f"{large['torchvision_fp32']:.3f}")
    for m in ("fp32", "bf16"):
        if f"detectres_{m}" in large:
            st = large[f"stages_{m}"]
            print(f"  detectres {m}: {large[f'detectres_{m}']:.3f} (backbone {st['backbone']:.3f}, "
                  f"rpn {st['rpn']:.3f}, roi_heads {st['roi_heads']:.3f})")


def print_ratio_lines(r: dict, large: dict | None, device: str) -> None:
    print(f"train ratio detectres/torchvision: {r['train_ratio']:.2f}")
    print(f"inference ratio detectres/torchvision: {r['inference_ratio']:.2f}")
    if large is None:
        return
    print(f"inference ratio fp32 detectres/torchvision: {large['ratio_fp32']:.2f}")
    if "ratio_bf16" in large:
        print(f"inference ratio bf16 detectres/torchvision: {large['ratio_bf16']:.2f}")
    else:
        print(f"bf16: not supported by this {'GPU' if device.startswith('cuda') else 'CPU'}")


def write_video(path: str, frames: int, size=(1280, 720), fps: float = 30.0) -> None:
    """A synthetic street-like video: coloured boxes moving over a smooth background."""
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        img = background.copy()
        for k in range(6):
            x = int((i * (3 + k) + 200 * k) % (size[0] - 160))
            cv2.rectangle(img, (x, 80 + 100 * k), (x + 120, 160 + 100 * k), (40 * k, 200, 255 - 40 * k), -1)
        writer.write(img)
    writer.release()


def write_demo_benchmark_inputs(out: str, frames: int) -> None:
    """An R101-C4 checkpoint with the fixture's deterministic weights and a 720p video, in ``out``."""
    os.makedirs(out, exist_ok=True)
    cfg = compose_config("train", ["model=r101_c4", "data=coco"])
    model = build_model(cfg.model, num_classes=80)
    init_weights(model, seed=0)
    state = {"model": model.state_dict(), "config": checkpoint_config(cfg), "class_names": list(COCO_CLASSES)}
    atomic_torch_save(state, os.path.join(out, "r101_c4_random.pth"))
    write_video(os.path.join(out, "street_720p.mp4"), frames)
    print(f"wrote {out}/r101_c4_random.pth and {out}/street_720p.mp4 ({frames} frames, 1280x720)")
