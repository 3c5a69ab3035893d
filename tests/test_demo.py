"""The video demo end to end: a short video of moving shapes, a quickstart model trained on such frames."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from detectres.apps.demo.overlay import ModelStage, Overlay, filter_prediction
from detectres.apps.demo.pipeline import Pipeline
from detectres.apps.demo.sources import Frame
from detectres.apps.train import train
from detectres.config import PROJECT_ROOT, compose_config

SIZE = 160
BOX = 44
DEMO = str(PROJECT_ROOT / "demo" / "demo.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def scene(i: int) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """Frame i: a rectangle moving right, a circle moving left, and i in binary along the bottom."""
    img = np.full((SIZE, SIZE, 3), (90, 120, 60), np.uint8)
    x = 10 + 3 * (i % 30)
    cv2.rectangle(img, (x, 20), (x + BOX, 20 + BOX), (30, 30, 230), -1)
    cx = 120 - 2 * (i % 30)
    cv2.circle(img, (cx, 115), BOX // 2, (230, 200, 20), -1)
    for bit in range(9):
        value = 255 if (i >> bit) & 1 else 0
        img[148:156, 4 + bit * 10:12 + bit * 10] = value
    return img, [(1, [x, 20, x + BOX, 20 + BOX]), (0, [cx - BOX // 2, 93, cx + BOX // 2, 137])]


def decode_index(img: np.ndarray) -> int:
    return sum((1 << bit) for bit in range(9) if img[150:154, 6 + bit * 10:10 + bit * 10].mean() > 127)


def write_video(path, count, fps=10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (SIZE, SIZE))
    for i in range(count):
        writer.write(scene(i)[0])
    writer.release()


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The quickstart model, trained for 150 iterations on 30 frames of the scene (about 25 s)."""
    root = tmp_path_factory.mktemp("scenes")
    (root / "imgs").mkdir()
    images, anns = [], []
    for i in range(30):
        img, objects = scene(i)
        cv2.imwrite(str(root / "imgs" / f"{i:03d}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "width": SIZE, "height": SIZE})
        for label, (x1, y1, x2, y2) in objects:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": label + 1, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    cats = [{"id": 1, "name": "circle"}, {"id": 2, "name": "rectangle"}]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    d = {"image_dir": root / "imgs", "ann_file": root / "ann.json"}
    out = root / "run"
    train(compose_config("train", [
        "data=custom", f"data.train.image_dir={d['image_dir']}", f"data.train.ann_file={d['ann_file']}",
        f"data.val.image_dir={d['image_dir']}", f"data.val.ann_file={d['ann_file']}", "data.num_workers=0",
        f"runtime.output_dir={out}", "solver.max_iter=150", "solver.lr_scheduler.steps=[120]",
        "solver.lr_scheduler.warmup_iters=20", "solver.ims_per_batch=4", f"input.min_size_train=[{SIZE}]",
        f"input.min_size_test={SIZE}", "vis_images=0",
        "runtime.num_threads=2", "solver.checkpoint_period=0"]))
    return str(out / "model_final.pth")


def run_demo(*args, **kwargs):
    return subprocess.run([sys.executable, DEMO, *args], capture_output=True, text=True, env=ENV, timeout=300,
                          **kwargs)


def perimeter_change(out: np.ndarray, ref: np.ndarray, box: list[int], band: int = 2) -> float:
    """Mean absolute change along the box's outline (where a drawn box would be)."""
    x1, y1, x2, y2 = box
    mask = np.zeros(out.shape[:2], bool)
    mask[max(0, y1 - band):y2 + band + 1, max(0, x1 - band):x2 + band + 1] = True
    mask[y1 + band + 1:y2 - band, x1 + band + 1:x2 - band] = False
    return float(np.abs(out.astype(int) - ref.astype(int))[mask].mean())


def test_video_frames_in_order_with_boxes_on_the_shapes(checkpoint, tmp_path):
    src, dst = tmp_path / "moving.avi", tmp_path / "annotated.avi"
    write_video(src, 30)
    res = run_demo(f"checkpoint={checkpoint}", f"source={src}", f"output={dst}", "display=false")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "processed 30 frames" in res.stdout and "FPS end to end" in res.stdout
    frames, fps = read_video(dst)
    assert len(frames) == 30 and fps == pytest.approx(10.0)
    assert frames[0].shape == (SIZE, SIZE, 3)
    assert [decode_index(f) for f in frames] == list(range(30))
    # Compare with the decoded source (same compression): re-encoding alone changes an outline band by
    # ~1-2 grey levels on average, a drawn 1-px box line (even 3 px off) by ~18-21.
    source_frames, _ = read_video(src)
    for i, (frame, source) in enumerate(zip(frames, source_frames)):
        for _, box in scene(i)[1]:
            assert perimeter_change(frame, source, box, band=4) > 8, f"no box drawn around {box} in frame {i}"


def test_image_folder_skips_and_counts_undecodable_frames(checkpoint, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), scene(i)[0])
    (folder / "001b.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    res = run_demo(f"checkpoint={checkpoint}", f"source={folder}", f"output={out}", "display=false")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "processed 3 frames, 1 skipped (undecodable: 001b.png)" in res.stdout
    assert sorted(os.listdir(out)) == ["000.png", "001.png", "002.png"]  # the inputs' names and formats
    res = run_demo(f"checkpoint={checkpoint}", f"source={folder}", f"output={folder}", "display=false")
    assert res.returncode == 1 and "output would write" in res.stderr and "over the input" in res.stderr
    assert (folder / "001b.png").read_bytes() == b"\x89PNG broken"
    # the same through a model config plus weights (the restore path without a stored config)
    res = run_demo("model=quickstart", f"model.weights={checkpoint}", f"source={folder}", f"output={tmp_path / 'o2'}",
                   "display=false")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "processed 3 frames, 1 skipped" in res.stdout and len(os.listdir(tmp_path / "o2")) == 3


def test_undecodable_video_frame_is_skipped_and_counted(checkpoint, tmp_path):
    src, dst = tmp_path / "corrupt.avi", tmp_path / "out.avi"
    write_video(src, 12)
    data = bytearray(src.read_bytes())
    jpeg_starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(jpeg_starts) == 12  # MJPG: one JPEG per frame
    data[jpeg_starts[5] + 2:jpeg_starts[5] + 600] = bytes(598)  # wipe frame 5's JPEG header and data
    src.write_bytes(bytes(data))
    res = run_demo(f"checkpoint={checkpoint}", f"source={src}", f"output={dst}", "display=false")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "processed 11 frames, 1 skipped (undecodable: corrupt_000005)" in res.stdout
    frames, _ = read_video(dst)
    assert [decode_index(f) for f in frames] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize("make_input, message", [
    (lambda p: str(p / "missing.mp4"), "detectres: error: input not found"),
    (lambda p: (p / "bad.mp4").write_text("not a video") and str(p / "bad.mp4"), "detectres: error: cannot open video"),
    (lambda p: "97", "detectres: error: cannot open camera 97"),
])
def test_errors_are_one_clear_line(tmp_path, make_input, message):
    res = run_demo("checkpoint=unused.pth", f"source={make_input(tmp_path)}", f"output={tmp_path / 'o.avi'}",
                   "display=false")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and res.stderr.startswith(message), res.stderr


def video_in_progress(folder, proc, min_bytes=200_000, timeout=60):
    """Wait until the demo's temporary video file (the final name appears only when it is complete) has
    ``min_bytes``; returns its path."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in folder.glob(".detectres-tmp-*") if p.stat().st_size >= min_bytes]
        if partial:
            return partial[0]
        time.sleep(0.2)
    raise AssertionError("the demo wrote no temporary video")


@pytest.mark.parametrize("sig, status, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
                         ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_finalises_a_playable_video_and_exits_as_every_tool_does(checkpoint, tmp_path, sig, status, word):
    """The one signal policy (utils/signals.py): 143 after SIGTERM, 130 after Ctrl-C, once the video is closed."""
    src, dst = tmp_path / "long.avi", tmp_path / "out" / "partial.avi"
    write_video(src, 3000)
    proc = subprocess.Popen([sys.executable, DEMO, f"checkpoint={checkpoint}", f"source={src}", f"output={dst}",
                             "display=false"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    dst.parent.mkdir(exist_ok=True)
    video_in_progress(dst.parent, proc)
    assert not dst.exists()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr[-2000:]
    assert "interrupted; output finalised" in stdout and stderr.strip().endswith(f"detectres: {word}")
    assert list(dst.parent.iterdir()) == [dst]  # renamed into place, no temporary file left
    frames, _ = read_video(dst)
    assert 0 < len(frames) < 3000
    cap = cv2.VideoCapture(str(dst))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)  # the index was written on close
    assert [decode_index(f) for f in frames] == list(range(len(frames)))


def test_a_killed_demo_leaves_no_file_at_the_final_name_and_never_writes_over_its_source(checkpoint, tmp_path):
    src, dst = tmp_path / "long.avi", tmp_path / "out" / "partial.avi"
    write_video(src, 3000)
    dst.parent.mkdir()
    proc = subprocess.Popen([sys.executable, DEMO, f"checkpoint={checkpoint}", f"source={src}", f"output={dst}",
                             "display=false"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    video_in_progress(dst.parent, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert not dst.exists()
    size = src.stat().st_size
    res = subprocess.run([sys.executable, DEMO, f"checkpoint={checkpoint}", f"source={src}", f"output={src}",
                          "display=false"], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 1 and src.stat().st_size == size
    assert res.stderr.strip() == f"detectres: error: output would write {src} over the input {src}: choose another output"


def test_pipeline_order_filter_and_max_frames():
    """A slow writer and a tiny queue: order holds, max_frames stops reading, the class filter applies."""
    written = []

    class SlowSink:
        def write(self, frame, image):
            time.sleep(0.002)
            written.append(frame.index)

        def close(self):
            written.append("closed")

    def predict(image):
        return {"boxes": np.array([[1, 1, 5, 5], [2, 2, 8, 8]], np.float32), "scores": np.array([0.9, 0.8], np.float32),
                "labels": np.array([0, 1]), "class_names": ["a", "b"]}

    frames = (Frame(i, np.zeros((20, 20, 3), np.uint8), str(i)) for i in range(1000))
    kept = []
    model = ModelStage(lambda im: kept.append(1) or predict(im), keep_labels={1})
    stats = Pipeline(frames, model, [SlowSink()], overlay=Overlay(["a", "b"]), max_frames=50, queue_size=2).run()
    assert written == [*range(50), "closed"] and stats.processed == 50 and stats.read == 50

    filtered = filter_prediction(predict(None), {1})
    assert filtered["labels"].tolist() == [1] and filtered["class_names"] == ["b"]
