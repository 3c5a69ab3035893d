"""Timing helpers shared by the benchmarks: the same inputs in each model's convention, training and
inference steps, interleaved rounds (drift hits all alike; GPU timings synchronize) and medians."""
from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch
from torch import nn

from detectres.data.datasets.coco import COCODataset
from detectres.data.image_io import read_image_file
from detectres.utils.amp import cpu_runs_natively, effective_dtype
from detectres.utils.resize import resize_shortest_edge


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


def to_device(ours: dict, theirs: tuple, device: str) -> tuple[dict, tuple]:
    moved = {k: v.to(device) for k, v in ours.items()}
    return moved, (theirs[0].to(device), {k: v.to(device) for k, v in theirs[1].items()})


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