"""Normalisation layers for the backbone: FrozenBN, BN, GroupNorm, and a conv that owns its norm."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("FrozenBN", "BN", "GN")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers.

    y = x * weight / sqrt(running_var + eps) + bias - running_mean * weight / sqrt(running_var + eps)
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        return torch.addcmul(shift.view(1, -1, 1, 1).to(x.dtype), x, scale.view(1, -1, 1, 1).to(x.dtype))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # BatchNorm checkpoints (torchvision) carry a counter FrozenBN has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def from_batchnorm(bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        frozen = FrozenBatchNorm2d(bn.num_features, bn.eps)
        if bn.affine:
            frozen.weight.copy_(bn.weight.detach())
            frozen.bias.copy_(bn.bias.detach())
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
        return frozen

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def group_count(channels: int, max_groups: int = 32) -> int:
    """32 groups where the channel count allows it, else the largest common divisor (thin nets)."""
    return math.gcd(max_groups, channels)


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "GN":
        return nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


class ConvNorm(nn.Conv2d):
    """Conv2d (no bias) followed by its own ``norm`` child, named as in Detectron2 (``conv1.norm``).

    With FrozenBN the norm is an affine map, folded into the convolution's weight and bias: one pass
    over the activations instead of two, same numbers. Where gradients reach ``weight`` (a trainable
    conv while training) the fold is recomputed each forward; everywhere else (frozen stages,
    inference) it is computed once and cached, with its copy in the autocast dtype, until the weight,
    the norm's statistics or the device change.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1, norm: str):
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.norm = make_norm(norm, out_channels)
        self._folded: dict = {}

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, FrozenBatchNorm2d):
            weight, bias = self.folded_weight(x.device.type)
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return self.norm(super().forward(x))

    def act(self, x: Tensor, *, relu: bool, residual: Tensor | None = None) -> Tensor:
        """``relu?(self(x) + residual?)``: on a CPU at inference, one oneDNN convolution with the addition
        and the ReLU fused into it (no extra passes over the activations, same numbers); elsewhere the
        plain ops."""
        needs_grad = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad or (
            residual is not None and residual.requires_grad))
        if isinstance(self.norm, FrozenBatchNorm2d) and not needs_grad and fused_conv_available(x):
            weight, bias = self.folded_weight(x.device.type)
            if fused_conv_runs(weight.dtype):
                return self.fused(x, weight, bias, relu=relu, residual=residual)
        out = self(x)
        if residual is not None:
            out = out + residual
        return F.relu_(out) if relu else out

    def fused(self, x: Tensor, weight: Tensor, bias: Tensor, *, relu: bool, residual: Tensor | None) -> Tensor:
        args = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x.to(weight.dtype), weight, bias, *args,
                                                           "relu" if relu else "none", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x.to(weight.dtype), residual.to(weight.dtype), weight, bias, *args, "add", None,
            "relu" if relu else None, [], "")

    def fold(self) -> tuple[Tensor, Tensor]:
        scale, shift = self.norm.scale_shift()
        return self.weight * scale.view(-1, 1, 1, 1), shift

    def folded_weight(self, device_type: str) -> tuple[Tensor, Tensor]:
        """(weight, bias) with the FrozenBN folded in: fresh when gradients must reach ``weight`` (or the
        tensors are inference tensors, which keep no version), else cached per autocast dtype and keyed
        by the five tensors' identity, storage and version (in-place updates and ``load_state_dict``
        refresh it; an edit through ``.data`` bypasses versions, so ``_apply`` and state loading also
        clear the cache)."""
        tensors = (self.weight, *(getattr(self.norm, k) for k in ("weight", "bias", "running_mean", "running_var")))
        if (torch.is_grad_enabled() and self.weight.requires_grad) or any(t.is_inference() for t in tensors):
            return self.fold()
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        key = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
        cached = self._folded.get(dtype)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                weight, bias = self.fold()
                if dtype is not None:
                    weight, bias = weight.to(dtype), bias.to(dtype)
            cached = self._folded[dtype] = (key, weight, bias)
        return cached[1], cached[2]

    def _apply(self, fn, *args, **kwargs):
        self._folded = {}
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._folded = {}
        super()._load_from_state_dict(*args, **kwargs)


def fused_conv_available(x: Tensor) -> bool:
    """oneDNN's fused convolution (what torch.compile emits on CPUs) exists in this build, for ``x``'s device
    (not while tracing for export: the plain ops have TorchScript and ONNX forms everywhere)."""
    return x.device.type == "cpu" and FUSED_CONV and not torch.jit.is_tracing()


def fused_conv_runs(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused convolution runs ``dtype`` on this CPU: fp32 always; bf16 and fp16 only with
    the matching instructions (it has no slow fallback, where a plain convolution would merely be slow)."""
    if dtype == torch.float32:
        return True
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    return check is not None and hasattr(torch.ops.mkldnn, check) and bool(getattr(torch.ops.mkldnn, check)())


FUSED_CONV = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def freeze_module(module: nn.Module) -> nn.Module:
    """Stop gradients into ``module`` and turn its BatchNorms into FrozenBN (in place where possible)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return convert_bn_to_frozen(module)


def convert_bn_to_frozen(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        new_child = convert_bn_to_frozen(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
