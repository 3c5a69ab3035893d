#!/usr/bin/env python
"""Run a detector on a video, a webcam, an image or a folder, frame by frame.

    python demo/demo.py checkpoint=outputs/quickstart_shapes/model_final.pth source=video.mp4 output=out.mp4
    python demo/demo.py checkpoint=PATH source=0            # webcam 0, in a window
"""
import os

# OpenCV's and FFmpeg's own log lines would bury our one-line errors.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from detectres.apps.cli import run_tool  # noqa: E402
from detectres.apps.demo.app import run_demo  # noqa: E402

if __name__ == "__main__":
    run_tool("demo", run_demo)
