"""Faster R-CNN in two layouts, chosen by the backbone:

- C4 (a :class:`ResNet`): stem..res4 shared -> RPN on res4 -> res5 per RoI -> predictor (the ResNet paper);
- FPN (an :class:`FPN`): the whole ResNet + pyramid shared -> RPN on P2..P6 -> 7x7 RoIAlign from P2..P5
  -> two fc layers -> predictor (Lin et al. 2017, Detectron2's R-FPN).

Two entry points, one return type each:

- ``model(batched_inputs)`` (``forward``) is the training computation and returns the four losses;
- ``model.inference(batched_inputs)`` returns per-image detections.

Inputs are per-image dicts: ``image`` (3, H, W) BGR in 0..255 (uint8 or float, already resized),
optional ``height``/``width`` (the original size the detections are mapped back to), and for the
losses ``gt_boxes`` (G, 4) XYXY in input pixels and ``gt_classes`` (G,) in 0..K-1.
"""
from __future__ import annotations

from typing import Annotated, Callable, Literal, Protocol

import torch
from torch import Tensor, nn

from detectres.config.constraints import ClassCount, Length, PositiveFloat, Range
from detectres.modeling.backbones.resnet import DetectionParts
from detectres.modeling.postprocessing import detector_postprocess
from detectres.modeling.roi_heads.base import ROIHeads
from detectres.modeling.rpn import RPN
from detectres.structures.image_list import ImageList


class Backbone(Protocol):
    """The backbone contract the detector reads (nothing asks a backbone's class). A feature backbone runs once
    per image, ``forward(images) -> Tensor | list[Tensor]`` (one map, or levels from the finest), and says

    - ``out_channels``: the width of every map it returns;
    - ``strides``: each map's stride, in the order returned;
    - ``size_divisibility``: the multiple inputs must be padded to (0: none);
    - ``box_levels``: how many of the maps, from the first, RoIs are pooled from (the rest feed the RPN only).

    A backbone that also has a stage to run per RoI (the ResNet paper's C4 layout) instead offers
    ``detection_parts()``, returning :class:`~detectres.modeling.backbones.resnet.DetectionParts`: its
    feature part, that stage and the stage's width. Weight loading reads two optional declarations:
    ``imagenet_key_map`` (where an ImageNet file's keys go) and ``untrained_children`` (its own layers no
    ImageNet file fills).
    """

    def __call__(self, x: Tensor) -> Tensor | list[Tensor]: ...


class FasterRCNN(nn.Module):
    """Assembles the detector; the heads size themselves from the backbone (channels and strides).

    Args:
        backbone: any module honouring the backbone contract (``docs/ARCHITECTURE.md``): a full ResNet
            (C4: ``detection_parts()`` gives stem..res4 as ``backbone`` and res5 for the box head), an FPN,
            or any feature backbone exposing ``out_channels``, ``strides``, ``size_divisibility`` and
            ``box_levels`` (one map or a list of maps).
        rpn: a callable (Hydra partial) taking ``in_channels`` and ``strides`` -> :class:`RPN`.
        roi_heads: a callable taking ``num_classes`` and the features in one form: ``in_channels`` and the
            ``strides`` of the maps RoIs pool from, and the backbone's ``per_roi_stage`` (C4: res5) and
            ``per_roi_channels`` (None without one) -> :class:`Res5ROIHeads` or :class:`FPNROIHeads`.
        num_classes: K foreground classes.
        pixel_mean, pixel_std: per-channel normalisation in ``input_format`` channel order.
        input_format: "BGR" or "RGB", what the weights expect (inputs always arrive BGR).
        channels_last: keep convolution weights and activations NHWC, which oneDNN (CPU) and cuDNN
            run faster; the arithmetic is the same fp32 as NCHW.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        rpn: Callable[..., RPN],
        roi_heads: Callable[..., ROIHeads],
        num_classes: ClassCount,
        pixel_mean: Annotated[list[float], Length(3)],
        pixel_std: Annotated[list[PositiveFloat], Length(3)],
        input_format: Literal["BGR", "RGB"] = "BGR",
        size_divisibility: Annotated[int, Range(0, 1024)] = 0,  # pad inputs to a multiple (FPN: of its coarsest stride, 32)
        channels_last: bool = True,
    ):
        super().__init__()
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
        self.backbone, self.rpn, self.roi_heads = assemble(backbone, rpn, roi_heads, num_classes, size_divisibility)
        self.num_classes = num_classes
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.roi_heads.memory_format = self.memory_format
        self.to(memory_format=self.memory_format)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: list[dict]) -> ImageList:
        images = []
        for x in batched_inputs:
            img = x["image"].to(self.device, non_blocking=True).float()
            if self.input_format == "RGB":
                img = img.flip(0)
            images.append((img - self.pixel_mean) / self.pixel_std)
        batch = ImageList.from_tensors(images, self.size_divisibility)
        batch.tensor = batch.tensor.contiguous(memory_format=self.memory_format)
        return batch

    def forward(self, batched_inputs: list[dict]) -> dict[str, Tensor]:
        """The training computation: ``loss_rpn_cls``, ``loss_rpn_loc``, ``loss_cls``, ``loss_box_reg``."""
        missing = [i for i, x in enumerate(batched_inputs) if "gt_boxes" not in x or "gt_classes" not in x]
        if missing:
            raise ValueError(f"FasterRCNN(...) computes training losses and needs gt_boxes and gt_classes; inputs "
                             f"{missing} have none (use FasterRCNN.inference(...) for detections)")
        images = self.preprocess(batched_inputs)
        targets = [self.training_target(x) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, rpn_losses = self.rpn(features, images.image_sizes, targets)
        roi_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        return {**rpn_losses, **roi_losses}

    def training_target(self, x: dict) -> dict:
        """Ground truth on the model's device, and a generator seeded with ``sample_seed`` (when the
        item has one) so that the anchors and RoIs sampled for an image depend on it alone."""
        target = {"gt_boxes": x["gt_boxes"].to(self.device), "gt_classes": x["gt_classes"].to(self.device)}
        if x.get("sample_seed") is not None:
            target["generator"] = torch.Generator(device=self.device).manual_seed(int(x["sample_seed"]))
        return target

    @torch.no_grad()
    def inference(self, batched_inputs: list[dict]) -> list[dict[str, Tensor]]:
        """Per image ``pred_boxes`` (D, 4) in original pixels, ``scores`` (D,), ``pred_classes`` (D,)."""
        images = self.preprocess(batched_inputs)
        features = self.backbone(images.tensor)
        proposals = self.rpn.inference(features, images.image_sizes)
        results = self.roi_heads.inference(features, proposals, images.image_sizes)
        return [detector_postprocess(r, x, hw) for r, x, hw in zip(results, batched_inputs, images.image_sizes)]


def assemble(backbone: Backbone, rpn: Callable[..., RPN], roi_heads: Callable[..., ROIHeads],
             num_classes: int, size_divisibility: int) -> tuple[nn.Module, RPN, ROIHeads]:
    """The shared backbone, the RPN and the RoI heads, sized from the backbone's contract: its feature
    part (``out_channels``, ``strides``, ``size_divisibility``, ``box_levels``) and, for the C4 layout, the
    stage it runs per RoI (``detection_parts()``; a backbone without it is all feature part)."""
    parts = backbone.detection_parts() if hasattr(backbone, "detection_parts") else DetectionParts(features=backbone)
    features = parts.features
    needed = int(getattr(features, "size_divisibility", 0))
    if needed and (size_divisibility == 0 or size_divisibility % needed):
        raise ValueError(f"model.size_divisibility={size_divisibility}: the backbone ({type(features).__name__}) "
                         f"needs inputs padded to a multiple of {needed} (its coarsest stride); set it to {needed}")
    strides = list(features.strides)
    box_levels = int(getattr(features, "box_levels", len(strides)))
    return features, rpn(in_channels=features.out_channels, strides=strides), roi_heads(
        in_channels=features.out_channels, strides=strides[:box_levels], per_roi_stage=parts.per_roi_stage,
        per_roi_channels=parts.per_roi_channels, num_classes=num_classes)
