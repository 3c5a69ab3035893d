"""The console commands ``pip install`` puts on the PATH (``detectres-train``, ``detectres-test``, ...),
each the same tool as ``python tools/<script>.py`` with the same Hydra overrides. The tools' modules
are imported when a command runs, so starting one loads only what it needs."""
from __future__ import annotations

import importlib
import os
import signal
import sys

from detectres.utils.signals import SignalGate, on_sigterm, report_interrupt

# command -> (module in detectres.apps, function, Hydra config name or None for an argparse tool)
COMMANDS = {
    "detectres-train": ("train", "train", "train"),
    "detectres-test": ("evaluate", "evaluate", "eval"),
    "detectres-predict": ("predict", "predict", "predict"),
    "detectres-demo": ("demo.app", "run_demo", "demo"),
    "detectres-check-data": ("check_data", "check_data", "check_data"),
    "detectres-ablation": ("ablation", "run_ablation", "ablation"),
    "detectres-benchmark": ("benchmark", "main", "benchmark"),
    "detectres-train-benchmark": ("train_benchmark", "main", "train_benchmark"),
    "detectres-convert": ("convert", "main", None),
    "detectres-convert-data": ("convert_data", "main", None),
    "detectres-gpu-latency": ("gpu_latency", "main", None),
    "detectres-scoring-benchmark": ("scoring_benchmark", "main", None),
    "detectres-scale-benchmark": ("scale_benchmark", "main", None),
    "detectres-plot": ("plot", "main", None),
    "detectres-export": ("export", "main", None),
    "detectres-deploy-benchmark": ("deploy_benchmark", "main", None),
    "detectres-zoo": ("zoo", "main", None),
}


def run_command(name: str) -> None:
    """Run the tool behind console command ``name`` on ``sys.argv``: the one entry of every tool (the
    scripts in ``tools/`` call it too), so Ctrl-C and SIGTERM end it with 130 / 143 and one line at any
    moment, while the heavy imports load or the config is composed included."""
    signal.signal(signal.SIGTERM, on_sigterm)
    gate = SignalGate().hold()  # a signal inside a C++ extension's import aborts the process: defer it
    try:
        try:
            start(name, gate)
        finally:
            gate.release()
    except KeyboardInterrupt as e:
        sys.exit(report_interrupt(e))


def start(name: str, gate: SignalGate) -> None:
    module, function, config = COMMANDS[name]
    if module == "demo.app":  # OpenCV's and FFmpeg's own log lines would bury the one-line errors
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    app = getattr(importlib.import_module(f"detectres.apps.{module}"), function)
    if config is None:
        gate.release()
        sys.exit(app())
    from detectres.apps.cli import run_tool

    run_tool(config, app, gate)


def command(name: str):
    def entry() -> None:
        run_command(name)
    entry.__name__ = name.removeprefix("detectres-").replace("-", "_")
    return entry


# one module-level function per command, named as setup.py's entry points name them (detectres-check-data
# -> check_data)
for _name in COMMANDS:
    _entry = command(_name)
    globals()[_entry.__name__] = _entry
