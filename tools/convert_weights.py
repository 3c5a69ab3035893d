#!/usr/bin/env python
"""Convert torchvision / MSRA / Detectron2 weights into a detectres checkpoint.

    python tools/convert_weights.py SRC DST --format {torchvision,msra,detectron2} [--model r101_c4]

Backbone files (torchvision, msra) load with `model.weights=DST` to train from ImageNet; Detectron2
detector files also carry their config and class names (`tools/test_net.py checkpoint=DST`).
"""
import argparse
import sys

from detectres.weights.convert import convert_file
from detectres.weights.loading import FORMATS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="the file to convert (.pth or .pkl)")
    p.add_argument("dst", help="where to write the detectres checkpoint (.pth)")
    p.add_argument("--format", required=True, choices=FORMATS[1:], help="the format of SRC")
    p.add_argument("--model", default=None, help="model config name (default: from the weights, e.g. r50_c4)")
    a = p.parse_args(argv)
    try:
        out = convert_file(a.src, a.dst, a.format, a.model)
    except (OSError, ValueError, KeyError) as e:
        print(f"convert_weights: {e}", file=sys.stderr)
        return 1
    n = sum(t.numel() for t in out["model"].values())
    kind = "backbone" if out["meta"]["backbone_only"] else "detector"
    print(f"wrote {a.dst}: {len(out['model'])} tensors ({n:,} elements), {kind} weights for model={out['model_name']}, "
          f"input {out['meta']['input_format']} mean {out['meta']['pixel_mean']} std {out['meta']['pixel_std']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
