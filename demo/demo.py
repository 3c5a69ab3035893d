#!/usr/bin/env python
"""Run a detector on a video, a webcam, an image or a folder, frame by frame.

    python demo/demo.py checkpoint=outputs/quickstart_shapes/model_final.pth source=video.mp4 output=out.mp4
    python demo/demo.py checkpoint=PATH source=0            # webcam 0, in a window
"""
import os
import sys

# OpenCV's and FFmpeg's own log lines would bury our one-line errors.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from detectres.apps.demo.app import run_demo  # noqa: E402
from detectres.apps.demo.sources import SourceError  # noqa: E402
from detectres.config import CONFIG_DIR, task_overrides  # noqa: E402


@hydra.main(config_path=str(CONFIG_DIR), config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_demo(cfg, task_overrides())
    except (SourceError, FileNotFoundError, ValueError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
