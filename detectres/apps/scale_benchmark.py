"""Loading COCO-sized data (``tools/scale_benchmark.py``): time to the first training iteration and peak
memory, on a COCO-2017-train-sized annotation file over real, tiny images (:mod:`scale_data`).

Each run is the real training tool (``tools/train_net.py data=coco``, the quickstart model) in a child
process, stopped with SIGTERM once its first iteration is written to ``metrics.jsonl``. The peak
resident memory (``VmHWM``) of every process of the run is read at that moment and summed: under
``--nproc 2`` (torchrun) that is the total of both ranks and the launcher. Each size is run twice: the
first run reads the JSON; the second finds the record cache the first one wrote (in a ``cache`` folder
beside the generated set: the user's own cache is not touched).

    python tools/scale_benchmark.py [--images 10000 50000 118287] [--val-images 5000] [--nproc 1] [--root DIR]
                                    [--keep-cache]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from detectres.apps.scale_data import write_split

VAL_IMAGES = 5000  # COCO 2017 val


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux ``/proc``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def peak_rss_gb(pids: list[int]) -> float:
    """The sum of each process's peak resident memory (``VmHWM``), in GB."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            continue
    return total * 1024 / 1e9


def train_command(root: str, out: str, nproc: int) -> list[str]:
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "tools", "train_net.py")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
                 str(29500 + os.getpid() % 1000)] if nproc > 1 else [sys.executable])
    threads = max(1, (os.cpu_count() or 1) // nproc)
    return [*launcher, tool, "data=coco", f"data.root={root}", "data.num_workers=0", f"runtime.output_dir={out}",
            "overwrite=true", "solver.max_iter=100000", "solver.eval_period=0", "log_period=1", "vis_images=0",
            f"runtime.num_threads={threads}"]


def first_iteration(root: str, nproc: int, cache: str, timeout_s: float = 900) -> tuple[float, float]:
    """(seconds from launch to the first iteration's metrics line, summed peak RSS in GB) of one run."""
    out = tempfile.mkdtemp(prefix="detectres-scale-")
    metrics = os.path.join(out, "metrics.jsonl")
    log = open(os.path.join(out, "log.txt"), "w+")
    start = time.perf_counter()
    proc = subprocess.Popen(train_command(root, out, nproc), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "DETECTRES_CACHE": cache})
    try:
        while not (os.path.exists(metrics) and os.path.getsize(metrics)):
            if proc.poll() is not None or time.perf_counter() - start > timeout_s:
                log.seek(0)
                raise RuntimeError(f"the training run ended (rc {proc.returncode}) before its first iteration:\n"
                                   + log.read()[-3000:])
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        rss = peak_rss_gb(process_tree(proc.pid))
        return seconds, rss
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        log.close()
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 50_000, 118_287])
    parser.add_argument("--nproc", type=int, default=1, help="training processes (torchrun) per run")
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "detectres-scale"),
                        help="where the generated sets are kept between runs (one folder per size)")
    parser.add_argument("--val-images", type=int, default=VAL_IMAGES, help="validation images (COCO 2017: 5,000)")
    parser.add_argument("--keep-cache", action="store_true",
                        help="do not clear the record cache before the first run of each size")
    args = parser.parse_args(argv)
    print(f"{'images':>8} {'run':>6} {'first iteration (s)':>20} {'peak RSS (GB)':>14}")
    for n in args.images:
        root = os.path.join(args.root, f"coco{n}-{args.val_images}")
        write_split(root, "train2017", n, seed=0)
        write_split(root, "val2017", args.val_images, seed=1)
        cache = os.path.join(root, "cache")  # the runs' own DETECTRES_CACHE: the user's is left alone
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
        for run in ("first", "second"):
            seconds, rss = first_iteration(root, args.nproc, cache)
            print(f"{n:>8} {run:>6} {seconds:>20.1f} {rss:>14.3f}", flush=True)
    return 0
