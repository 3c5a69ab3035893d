#!/usr/bin/env python
"""Write what the GPU demo benchmark needs into OUT: an R101-C4 detectres checkpoint with
deterministic random weights (the Detectron2 fixture's rules: real proposals) and a 720p video.

    python tools/make_demo_benchmark.py OUT [--frames 300]
"""
import argparse

from detectres.apps.benchmark import write_demo_benchmark_inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=300)
    a = p.parse_args()
    write_demo_benchmark_inputs(a.out, a.frames)


if __name__ == "__main__":
    main()
