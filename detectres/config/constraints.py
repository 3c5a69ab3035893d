"""The constraint vocabulary of detectres' schema: the ``Annotated`` aliases constructors use in their
signatures (``nms_thresh: Fraction``, ``out_channels: Channels``) and the constraints they carry.

Plain Python with no Hydra or OmegaConf import, so modeling (which declares its parameters with these)
imports without loading the config machinery; :mod:`detectres.config.schema` checks values against them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

@dataclass(frozen=True)
class Range:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, v) -> bool:
        above = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        return above and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi))

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'<' if self.hi_open else '<='} {self.hi:g}"


@dataclass(frozen=True)
class Length:
    n: int

    def ok(self, v) -> bool:
        return len(v) == self.n

    def __str__(self) -> str:
        return str(self.n)


@dataclass(frozen=True)
class MaxLength:
    n: int

    def ok(self, v) -> bool:
        return len(v) <= self.n

    def __str__(self) -> str:
        return f"at most {self.n}"


@dataclass(frozen=True)
class NonEmpty:
    def ok(self, v) -> bool:
        return len(v) > 0

    def __str__(self) -> str:
        return "non-empty"


@dataclass(frozen=True)
class Increasing:
    def ok(self, v) -> bool:
        return all(b > a for a, b in zip(v[:-1], v[1:]))

    def __str__(self) -> str:
        return "increasing"


@dataclass(frozen=True)
class Pattern:
    regex: str
    what: str

    def ok(self, v) -> bool:
        return re.fullmatch(self.regex, v) is not None

    def __str__(self) -> str:
        return self.what


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, lo_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]  # probabilities, IoU and score thresholds
# Upper bounds on every value that sizes memory, disk or work: a config read from a checkpoint is data
# from elsewhere, and a typo (an extra zero) should fail at once, not after an hour or a full disk.
MAX_IMAGE_SIDE = 8192
ImageSide = Annotated[int, Range(1, MAX_IMAGE_SIDE)]
Sizes = Annotated[list[ImageSide], NonEmpty(), MaxLength(64)]
Channels = Annotated[int, Range(1, 16384)]        # widths, stem, fc and pyramid channels
PerImage = Annotated[int, Range(1, 100_000)]      # detections per image
SampleCap = Annotated[int, Range(1, 10 ** 9)]     # sampled anchors / RoIs per image: a cap, not a size
TopK = Annotated[int, Range(1, 1_000_000)]        # proposals kept before / after NMS
ClassCount = Annotated[int, Range(1, 100_000)]
Blocks = Annotated[int, Range(1, 64)]             # residual blocks in a stage
GridSize = Annotated[int, Range(1, 64)]           # pooled RoI side, sampling points
AnchorSize = Annotated[float, Range(0, MAX_IMAGE_SIDE, lo_open=True)]
AspectRatio = Annotated[float, Range(0, 64, lo_open=True)]
ClassNames = Annotated[list[str], NonEmpty(), MaxLength(100_000)]
