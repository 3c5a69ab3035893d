"""The data-check application (``tools/check_data.py``): load each split with the configured checks and
report every problem."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

from omegaconf import DictConfig, OmegaConf

from detectres.config.builder import build
from detectres.data.build import prepare_data
from detectres.data.checks import DataCheckError, DataReport
from detectres.utils.env import set_threads
from detectres.utils.file_io import atomic_write_text
from detectres.utils.outputs import refuse_overwriting


def load_report(cfg: DictConfig, split: str) -> tuple[DataReport | None, int, str]:
    """(report, images kept, error) for one split, the images read at ``cfg.scan`` level."""
    try:
        dataset = build(cfg.data[split], f"data.{split}")
    except DataCheckError as e:
        return e.report, 0, str(e)
    except (FileNotFoundError, ValueError, KeyError) as e:
        return None, 0, f"{type(e).__name__}: {e}"
    return dataset.report, len(dataset), ""


def check_data(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Print each split's report; returns the exit status (1 if a split cannot be used)."""
    set_threads(cfg.runtime.num_threads)
    OmegaConf.update(cfg, "data.checks.scan", cfg.scan)
    prepare_data(cfg.data)
    status, everything = 0, {}
    for split in cfg.splits:
        report, kept, error = load_report(cfg, split)
        print(f"== {split}")
        if report is not None:
            print(report.summary(examples=cfg.show))
        if error:
            print(f"cannot use the {split} split:\n{error}" if report is None else f"{split}: stops before training "
                  f"({len(report.fatal)} problem(s) with policy 'fail')")
            status = 1
        else:
            print(f"{split}: {kept} images usable")
        everything[split] = {"usable_images": kept, "error": error,
                             "problems": [asdict(p) for p in (report.problems if report else [])]}
    if cfg.output:
        inputs = [v for split in cfg.splits for v in cfg.data[split].values() if isinstance(v, str) and os.path.isfile(v)]
        refuse_overwriting([cfg.output], inputs, "output")
        atomic_write_text(json.dumps(everything, indent=2), cfg.output)
        print(f"wrote {cfg.output}")
    return status
