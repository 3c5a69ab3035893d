"""docs/tutorial.md runs as written: every shell block (and any Python block), in order, in one bash session
started in a temporary folder, as a reader pastes them into one terminal, at a small scale (SCALE_DOWN).

Each entry of SCALE_DOWN must match the tutorial's commands exactly as often as it says, so an edit to the
tutorial cannot silently skip the scaling (the test fails, naming the entry). Any command exiting non-zero
fails the test, and the files and lines each step promises are checked afterwards. The console commands are
the ones installed next to this Python, importing this checkout's detectres."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
SHELL_BLOCKS, PYTHON_BLOCKS = ("bash", "sh", "shell", "zsh"), ("python", "py")
SHOWN_ONLY = ("text", "json")  # what commands print: not run
WORK = "detectres-tutorial"  # the folder step 1 makes and moves into

# (text in the tutorial's commands, what the test runs instead, how many times it must occur)
SCALE_DOWN = [
    # installing is the environment's business: check it holds what the install brings
    ('pip install -e ".[export]"', 'python -c "import detectres, onnx, onnxruntime"', 1),
    ('SPLITS = {"train": 160, "val": 40, "unseen": 8}', 'SPLITS = {"train": 12, "val": 4, "unseen": 2}', 1),
    ("draw=16 runtime.output_dir=runs/look", "draw=3 runtime.output_dir=runs/look runtime.num_threads=1", 1),
    ("detectres-train runtime.output_dir=runs/quickstart",
     "detectres-train runtime.output_dir=runs/quickstart data.generate.num_train=8 data.generate.num_val=2 "
     "solver.max_iter=2 solver.ims_per_batch=2 vis_images=0 runtime.num_threads=1", 1),
    ("solver.max_iter=300 solver.eval_period=100",
     "solver.max_iter=4 solver.eval_period=2 solver.ims_per_batch=2 vis_images=1 runtime.num_threads=1", 1),
    ("detectres-test checkpoint=", "detectres-test runtime.num_threads=1 checkpoint=", 1),
    ("detectres-predict checkpoint=", "detectres-predict runtime.num_threads=1 checkpoint=", 1),
]

# what each step says it writes, relative to the tutorial's folder
PROMISED_FILES = {
    "2 dataset": ["my_data/annotations/instances_train.json", "my_data/annotations/instances_val.json",
                  "my_data/train/train_0000.jpg", "my_data/val/val_0000.jpg", "my_data/unseen/unseen_0000.jpg",
                  "runs/look/train_mosaic.png", "runs/look/val_mosaic.png"],
    "3 starting model": ["runs/quickstart/model_final.pth"],
    "4 fine-tuning": ["runs/mine/model_best.pth", "runs/mine/model_final.pth", "runs/mine/train_net.log",
                      "runs/mine/metrics.jsonl", "runs/mine/vis/val_0000.jpg"],
    "5 evaluation": ["runs/mine/eval/eval.json", "runs/mine/eval/coco_instances_results.json"],
    "6 curves": ["runs/mine/training_curves.png", "runs/mine/confusion_matrix.png", "runs/mine/eval/pr_curves.png",
                 "runs/mine/eval/pr_curves_by_class.png", "runs/mine/eval/per_class_ap.png",
                 "runs/mine/eval/confusion_matrix.png", "runs/mine/eval/pr_f1.png"],
    "7 predictions": ["runs/unseen/detections.json", "runs/unseen/unseen_0000.jpg", "runs/unseen/unseen_0001.jpg"],
    "8 export": ["runs/exported/model.ts", "runs/exported/model.onnx", "runs/exported/export.json"],
}

# lines the tutorial shows, which must still be printed (at any scale)
PROMISED_OUTPUT = [
    "train: 12 images,", "unseen: 2 images, no labels",
    "my_data/annotations/instances_train.json: no problems found",
    "mosaic runs/look/train_mosaic.png",
    "wrote runs/quickstart/model_final.pth",
    "fine-tuning runs/quickstart/model_final.pth, trained for 3 classes, on 4 classes: "
    "roi_heads.box_predictor.bbox_pred, roi_heads.box_predictor.cls_score start afresh, every other layer is loaded",
    "at iteration 2; wrote runs/mine/model_best.pth",
    "Per-category bbox AP:",
    "plots: pr_curves.png, pr_curves_by_class.png, per_class_ap.png, confusion_matrix.png, pr_f1.png",
    "wrote runs/mine/training_curves.png",
    "saved runs/unseen/detections.json (2 image(s))",
    "onnx: runs/exported/model.onnx",
    "TorchScript gives the same detections:",
]

CLASSES = ["star", "cross", "moon", "arrow"]


def tutorial_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, bash source) of every block that runs, in order; a Python block runs through a heredoc.
    A block must say what it holds, so that no command block goes unrun for want of a language tag."""
    blocks = []
    for match in re.finditer(r"^```([\w-]*)\n(.*?)^```", text, re.S | re.M):
        lang, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        assert lang in SHELL_BLOCKS + PYTHON_BLOCKS + SHOWN_ONLY, (
            f"docs/tutorial.md:{line}: a ```{lang} block; tag commands ```bash (or ```python) and output ```text")
        if lang in SHELL_BLOCKS:
            blocks.append((line, body))
        elif lang in PYTHON_BLOCKS:
            blocks.append((line, f"python - <<'TUTORIAL_PYTHON'\n{body}TUTORIAL_PYTHON\n"))
    return blocks


def scaled_down(script: str) -> str:
    for old, new, count in SCALE_DOWN:
        found = script.count(old)
        assert found == count, (f"the tutorial's commands hold {old!r} {found} time(s), not {count}: "
                                "update SCALE_DOWN in tests/test_tutorial.py to the tutorial's new text")
        script = script.replace(old, new)
    return script


def session_script(blocks: list[tuple[int, str]]) -> str:
    parts = ["set -eo pipefail"]
    for line, body in blocks:
        parts.append(f'echo "### tutorial block at docs/tutorial.md:{line}"')
        parts.append(body)
    return "\n".join(parts) + "\n"


def environment(tmp_path: Path) -> dict:
    """A reader's environment with HOME and the data cache inside ``tmp_path``, one thread per process, this
    Python's console commands first on PATH, importing this checkout."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DETECTRES_", "HYDRA_"))}
    env.update(HOME=str(home), DETECTRES_CACHE=str(home / ".cache" / "detectres"), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               MPLBACKEND="Agg")
    return env


def test_every_scale_down_entry_matches_the_tutorial():
    script = "".join(body for _, body in tutorial_blocks(TUTORIAL.read_text()))
    scaled_down(script)  # raises naming the entry that no longer matches


def test_the_tutorial_runs(tmp_path):
    blocks = tutorial_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 9, f"only {len(blocks)} runnable blocks found in {TUTORIAL}"
    script = scaled_down(session_script(blocks))
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=environment(tmp_path), capture_output=True,
                            text=True, timeout=600)
    output = result.stdout + result.stderr
    started = [line for line in result.stdout.splitlines() if line.startswith("### tutorial block")]
    last_block = started[-1] if started else "none"
    assert result.returncode == 0, (f"exit status {result.returncode} in {last_block}\n"
                                    f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")

    work = tmp_path / WORK
    missing = {step: [f for f in files if not (work / f).is_file()] for step, files in PROMISED_FILES.items()}
    assert not any(missing.values()), f"files the tutorial promises are missing: {missing}"
    not_printed = [line for line in PROMISED_OUTPUT if line not in output]
    assert not not_printed, f"lines the tutorial shows were not printed: {not_printed}\n{output[-4000:]}"

    evaluation = json.loads((work / "runs/mine/eval/eval.json").read_text())
    assert {"AP", "AP50", "per_class", "best_f1_threshold"} <= set(evaluation)
    assert list(evaluation["per_class"]) == CLASSES
    detections = json.loads((work / "runs/unseen/detections.json").read_text())
    assert [Path(r["file"]).name for r in detections] == ["unseen_0000.jpg", "unseen_0001.jpg"]
    assert all((r["height"], r["width"]) == (240, 320) for r in detections)
    assert all(d["class"] in CLASSES for r in detections for d in r["detections"])
    exported = json.loads((work / "runs/exported/export.json").read_text())
    assert exported["class_names"] == CLASSES and exported["resize"]["min_size"] == 192
