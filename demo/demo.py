#!/usr/bin/env python
"""Run a detector on a video, a webcam, an image or a folder, frame by frame.

    python demo/demo.py checkpoint=outputs/quickstart_shapes/model_final.pth source=video.mp4 output=out.mp4
    python demo/demo.py checkpoint=PATH source=0            # webcam 0, in a window
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-demo")
