"""Metrics logging: one JSON line per record in ``metrics.jsonl``, mirrored to TensorBoard."""
from __future__ import annotations

import json
import os

from detectres.utils.file_io import reporting_full_disk


class MetricsWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.
    ``enabled=False`` (ranks other than 0) writes nothing."""

    def __init__(self, output_dir: str, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(output_dir)

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with reporting_full_disk(self.path), open(self.path, "a") as f:
            f.write(json.dumps({"iteration": iteration, **scalars}) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, iteration)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
