"""The paper's ablation table (baseline, +refinement, +context, +multi-scale, +all) for trained models
(``tools/ablation.py``).

Multi-scale settings follow the paper relative to the model: scales 1/3, 2/3, 1, 4/3 and 5/3 of its
test size (200..1000 around 600 in the paper), proposals from the test size, and the canonical RoI
size = the pooled size in input pixels (14 x 16 = 224 in the paper; ``canonical_size=null``).
"""
from __future__ import annotations

import json
import os

from omegaconf import DictConfig

from detectres.apps.evaluate import evaluate
from detectres.apps.schemas import validate_tool_config
from detectres.config import compose_config
from detectres.utils.file_io import atomic_write_text
from detectres.weights import read_weights

PAPER_SCALE_RATIOS = (1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3)


def multiscale_overrides(checkpoint: str, group: str) -> list[str]:
    size = int(read_weights(checkpoint).config["input"]["min_size_test"])
    scales = sorted({max(32, round(size * r)) for r in PAPER_SCALE_RATIOS})
    return [f"test={group}", f"test.multiscale.scales={scales}", f"test.multiscale.proposal_scale={size}",
            "test.multiscale.canonical_size=null"]


def ablation_rows(checkpoint: str, context_checkpoint: str) -> list[tuple[str, list[str]]]:
    return [
        ("baseline", [f"checkpoint={checkpoint}", "test=baseline"]),
        ("+refinement", [f"checkpoint={checkpoint}", "test=refine"]),
        ("+context", [f"checkpoint={context_checkpoint}", "test=baseline"]),
        ("+multi-scale", [f"checkpoint={checkpoint}", *multiscale_overrides(checkpoint, "multiscale")]),
        ("+all", [f"checkpoint={context_checkpoint}", *multiscale_overrides(context_checkpoint, "paper")]),
    ]


def format_table(results: dict[str, dict]) -> str:
    lines = ["| test | AP | AP50 | AP75 | s/image |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['AP']:.2f} | {r['AP50']:.2f} | {r['AP75']:.2f} | {r['seconds_per_image']:.4f} |")
    return "\n".join(lines)


def run_ablation(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Evaluate every row with the ablation's own runtime settings and ``overrides``; write
    ``ablation.md`` and ``ablation.json`` into ``runtime.output_dir``."""
    rt, output_dir, results = cfg.runtime, cfg.runtime.output_dir, {}
    shared = [f"runtime.device={rt.device}", f"runtime.amp={rt.amp}", *list(cfg.overrides)]
    if rt.num_threads is not None:
        shared.append(f"runtime.num_threads={rt.num_threads}")
    rows = {}
    for name, overrides in ablation_rows(cfg.checkpoint, cfg.context_checkpoint):  # every row checked first
        row = [*overrides, *shared, f"runtime.output_dir={os.path.join(output_dir, name.strip('+'))}"]
        rows[name] = (row, compose_config("eval", row))
        validate_tool_config("eval", rows[name][1])
    for name, (row, row_cfg) in rows.items():
        print(f"== {name}: {' '.join(row)}")
        results[name] = evaluate(row_cfg, row)
    table = format_table(results)
    atomic_write_text(table + "\n", os.path.join(output_dir, "ablation.md"))
    atomic_write_text(json.dumps({k: {m: v[m] for m in ("AP", "AP50", "AP75", "seconds_per_image")}
                                  for k, v in results.items()}, indent=2), os.path.join(output_dir, "ablation.json"))
    print(table)
    return results
