"""A small file cannot cost a lot: stored configs and weight files are bounded before they are walked or
loaded, and each refusal is one line naming the limit - within a second or two."""
import copy
import os
import pickle
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from detectres import Detector
from detectres.config import PROJECT_ROOT, UnsafeConfigError, checkpoint_config, compose_config
from detectres.config.schema import ConfigError
from detectres.modeling.build import build_model
from detectres.utils.file_io import UnsafeFileError


@pytest.fixture(scope="module")
def good(tmp_path_factory, shapes_overrides):
    folder = tmp_path_factory.mktemp("limits")
    cfg = compose_config("train", [*shapes_overrides, f"runtime.output_dir={folder}"])
    state = {"model": build_model(cfg.model, num_classes=3).state_dict(), "config": checkpoint_config(cfg),
             "class_names": ["circle", "rectangle", "triangle"]}
    return state, folder


def shared_references(levels: int = 25, width: int = 10) -> list:
    """A "billion laughs": ``width ** levels`` logical leaves in a few hundred bytes of pickle."""
    node = ["lol"]
    for _ in range(levels):
        node = [node] * width
    return node


def deep(levels: int) -> dict:
    node: dict = {}
    for _ in range(levels):
        node = {"a": node}
    return node


def with_config(state, change):
    evil = copy.deepcopy(state)
    change(evil["config"])
    return evil


CONFIG_CASES = {
    "billion_laughs": (lambda c: c["data"].update(lol=shared_references()), "a second reference to a node"),
    "anchor_list": (lambda c: c["model"]["rpn"]["anchor_generator"].update(sizes=list(range(10 ** 6))),
                    "more than 20000 nodes (limit MAX_NODES)"),
    "nesting": (lambda c: c["data"].update(deep=deep(3000)), "nests deeper than 32 levels (limit MAX_DEPTH)"),
    "long_string": (lambda c: c["data"].update(root="x" * 10 ** 7), "(limit MAX_STRING=4096)"),
    "tensor_in_config": (lambda c: c["data"].update(root=torch.zeros(3)), "a Tensor; only strings"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_bombs_are_refused_fast_with_the_limit_named(good, tmp_path, case):
    state, _ = good
    path = str(tmp_path / f"{case}.pth")
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # pickling 3000 levels needs it; loading does not
    try:
        torch.save(with_config(state, CONFIG_CASES[case][0]), path)
    finally:
        sys.setrecursionlimit(old_limit)
    start = time.perf_counter()
    with pytest.raises(UnsafeConfigError) as err:
        Detector.from_checkpoint(path, device="cpu")
    assert time.perf_counter() - start < 10  # a second or two here; generous for a loaded CI machine
    assert CONFIG_CASES[case][1] in str(err.value) and "\n" not in str(err.value), str(err.value)[:300]


def test_sizes_from_a_checkpoint_are_bounded_before_any_work(good, tmp_path):
    """A generator asked for 10**8 images never starts; the limit is named."""
    state, _ = good
    evil = with_config(state, lambda c: c["data"]["generate"].update(num_train=10 ** 8, root=str(tmp_path / "gen")))
    del evil["class_names"]  # the class names come from the (generated) data
    torch.save(evil, tmp_path / "gen.pth")
    with pytest.raises(ConfigError, match=r"data.generate.num_train=100000000: must be an integer in \[1, 100000\]"):
        Detector.from_checkpoint(str(tmp_path / "gen.pth"), device="cpu")
    assert not (tmp_path / "gen").exists()
    for key, value, words in (("min_size_test", 10 ** 6, "input.min_size_test=1000000: must be an integer in [1, 8192]"),):
        evil = with_config(state, lambda c: c["input"].update({key: value}))
        torch.save(evil, tmp_path / "big.pth")
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            Detector.from_checkpoint(str(tmp_path / "big.pth"), device="cpu")


def test_how_a_run_executes_comes_from_the_command_line(good, tmp_path):
    from detectres.weights.restore import restore_config

    state, _ = good
    torch.save(with_config(state, lambda c: c["data"].update(num_workers=12)), tmp_path / "w.pth")
    composed = compose_config("eval", ["data.num_workers=0"])
    cfg, _, _ = restore_config(composed, ["data.num_workers=0"], checkpoint=str(tmp_path / "w.pth"))
    assert cfg.data.num_workers == 0
    composed = compose_config("eval", [])
    cfg, _, _ = restore_config(composed, [], checkpoint=str(tmp_path / "w.pth"))
    assert cfg.data.num_workers == composed.data.num_workers


def zip_bomb(path, inner_bytes: int = 40 * 2 ** 20) -> None:
    """A torch zip whose extra entry inflates ~1000x (deflate-compressed zeros)."""
    tiny = path.with_suffix(".tiny")
    torch.save({"model": {"w": torch.zeros(3)}, "config": {}}, tiny)
    with zipfile.ZipFile(tiny) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        dst.writestr(src.infolist()[0].filename.split("/")[0] + "/data/999", bytes(inner_bytes))


def test_weight_files_are_bounded_finite_and_real(tmp_path):
    from detectres.weights.loading import read_weights

    zip_bomb(tmp_path / "bomb.pth")
    with pytest.raises(UnsafeFileError, match=r"would unpack to \d+ \(more than 4x the file"):
        read_weights(str(tmp_path / "bomb.pth"))
    torch.save({"model": {"w": torch.zeros(1).expand(10 ** 8)}}, tmp_path / "broadcast.pth")
    with pytest.raises(UnsafeFileError, match=r"tensors hold more than 4x the file's \d+ bytes \(at w:"):
        read_weights(str(tmp_path / "broadcast.pth"))
    torch.save({"model": {"backbone.w": torch.tensor([1.0, float("nan")])}}, tmp_path / "nan.pth")
    with pytest.raises(UnsafeFileError, match="backbone.w has values that are not finite"):
        read_weights(str(tmp_path / "nan.pth"))
    torch.save({"model": {"backbone.w": torch.zeros(2, dtype=torch.complex64)}}, tmp_path / "complex.pth")
    with pytest.raises(UnsafeFileError, match="backbone.w is a torch.complex64 tensor"):
        read_weights(str(tmp_path / "complex.pth"))
    torch.save({"model": {"backbone.w": [1.0]}}, tmp_path / "list.pth")
    with pytest.raises(UnsafeFileError, match="'backbone.w' holds a list, not a tensor"):
        read_weights(str(tmp_path / "list.pth"))


class Payload:
    def __reduce__(self):
        return (os.system, ("echo PWNED",))


def test_every_refusal_is_one_line_in_the_tools(tmp_path):
    """A truncated file is named as cut short (not as code); an unsafe pickle, a zip bomb: one line, exit 1
    (the tool once, for the pickle; the others are the same user errors, formatted by the same function)."""
    from detectres.apps.cli import USER_ERRORS, one_line
    from detectres.weights.loading import read_weights

    (tmp_path / "short.pth").write_bytes(b"\x80\x02\x8a")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"model": {"w": Payload()}}, protocol=2))
    zip_bomb(tmp_path / "bomb.pth")
    for name, words in {"short.pth": "cut short or corrupted", "bomb.pth": "more than 4x the file",
                        "evil.pkl": "asks to import posix.system"}.items():
        with pytest.raises(USER_ERRORS) as err:
            read_weights(str(tmp_path / name))
        assert words in one_line(err.value) and "\n" not in one_line(err.value)
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "predict.py"), f"checkpoint={tmp_path / 'evil.pkl'}",
                          f"source={tmp_path}", f"runtime.output_dir={tmp_path / 'out'}"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "asks to import posix.system" in lines[0], res.stderr[-2000:]
    assert "PWNED" not in res.stdout
