"""RoIAlign as one weighted gather over channels-last features (CPU inference and training).

torchvision's CPU ``roi_align`` runs on one thread and walks each channel plane per RoI. The same
numbers come from a sparse product: every output bin is a weighted sum of a few feature-map pixels
(its bilinear samples' four taps, averaged), and all C channels of a pixel sit next to each other in
a channels-last map. :func:`roi_align_gather` builds those pixel indices and weights with fp32 tensor
ops (the sample points, grid sizes and border rules of torchvision's kernel) and sums the rows with
``embedding_bag``, which is vectorised over channels and multi-threaded. It can also return only
every ``stride``-th bin (what a strided 1x1 convolution after the pooler reads), at a fraction of the
cost. Autograd through it (``embedding_bag``'s backward scatters into the table, multi-threaded) gives
torchvision's gradients several times faster than its one-thread CPU backward. tests/test_fast_paths.py
checks both against ``torchvision.ops.roi_align``.

Shapes: N images, C channels, H x W feature map, R RoIs, S output size, B = ceil(S / stride) bins per
side, K pixels a bin can touch along one axis.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def axis_taps(start: Tensor, length: Tensor, grid: Tensor, *, size: int, extent: int, stride: int
              ) -> tuple[Tensor, Tensor]:
    """Along one axis, for R RoIs starting at ``start`` (feature pixels, offset applied) with ``length``
    split into ``size`` bins of ``grid`` samples each: (R, B, K) pixel indices and their (R, B, K)
    bilinear weights summed over the bin's samples (unnormalised)."""
    bins = torch.arange(0, size, stride, device=start.device, dtype=start.dtype)
    samples = torch.arange(int(grid.max().clamp(min=1)), device=start.device, dtype=start.dtype)
    bin_len = (length / size)[:, None, None]
    y = start[:, None, None] + bins[None, :, None] * bin_len + (samples + 0.5) * bin_len / grid.clamp(min=1)[:, None, None]
    valid = (samples < grid[:, None, None]) & (y >= -1.0) & (y <= extent)
    y = y.clamp(min=0)
    low = y.floor().long()
    at_end = low >= extent - 1
    low = torch.where(at_end, torch.full_like(low, extent - 1), low)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(y), y - low.to(y.dtype))
    # each bin's window starts at the lowest pixel its valid samples touch (an inverted box's samples
    # descend; the unused sample slots of RoIs with a smaller grid do not count)
    first = torch.where(valid, low, torch.full_like(low, extent)).amin(dim=-1, keepdim=True).clamp(max=extent - 1)
    low, high = torch.where(valid, low - first, 0), torch.where(valid, high - first, 0)
    k = int(high.max()) + 1
    weights = torch.zeros((*low.shape[:2], k), device=y.device, dtype=y.dtype)
    weights.scatter_add_(2, low, (1 - frac) * valid)
    weights.scatter_add_(2, high, frac * valid)
    index = (first + torch.arange(k, device=y.device)).clamp(max=extent - 1)
    return index, weights


def roi_align_gather(features: Tensor, rois: Tensor, *, output_size: int, spatial_scale: float,
                     sampling_ratio: int = 0, aligned: bool = True, stride: int = 1) -> Tensor:
    """torchvision's ``roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)``
    (then ``[:, :, ::stride, ::stride]``), computed as a gather: (R, C, B, B) in channels-last layout.

    ``rois`` (R, 5) rows of (batch index, x1, y1, x2, y2) in input pixels. Sampling positions and
    weights are fp32; the sum runs in fp32 and the result has ``features``' dtype.
    """
    n, c, h, w = features.shape
    table = features.permute(0, 2, 3, 1).reshape(n * h * w, c).float()
    box = rois[:, 1:].float() * spatial_scale - (0.5 if aligned else 0.0)
    width, height = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    if not aligned:
        width, height = width.clamp(min=1.0), height.clamp(min=1.0)
    grid_w, grid_h = ((torch.full_like(width, sampling_ratio), torch.full_like(height, sampling_ratio))
                      if sampling_ratio > 0 else (torch.ceil(width / output_size), torch.ceil(height / output_size)))
    kw = {"size": output_size, "stride": stride}
    iy, wy = axis_taps(box[:, 1], height, grid_h, extent=h, **kw)
    ix, wx = axis_taps(box[:, 0], width, grid_w, extent=w, **kw)
    r, b = iy.shape[:2]
    image = rois[:, 0].long()[:, None, None, None, None] * (h * w)
    index = image + iy[:, :, None, :, None] * w + ix[:, None, :, None, :]
    count = (grid_h * grid_w).clamp(min=1)[:, None, None, None, None]
    weight = wy[:, :, None, :, None] * wx[:, None, :, None, :] / count
    out = F.embedding_bag(index.reshape(r * b * b, -1), table, per_sample_weights=weight.reshape(r * b * b, -1),
                          mode="sum")
    return out.view(r, b, b, c).permute(0, 3, 1, 2).to(features.dtype)
