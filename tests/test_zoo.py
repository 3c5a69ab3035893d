"""The model zoo: entries resolved by name through a local HTTP server standing in for the publishers
(``DETECTRES_ZOO_MIRROR``), into a temporary cache; nothing comes from the internet.

Each failure leaves no file in the cache and is one line naming the entry or URL; the end-to-end test
serves a Detectron2-format R50-C4 checkpoint (the Detectron2 fixture's weights) under the path of
``faster_rcnn_R_50_C4_1x`` and predicts exactly what the same file gives by path.
"""
import contextlib
import glob
import hashlib
import os
import pickle
import shutil
import socket
import threading
import time
import urllib.parse
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from detectres import Detector
from detectres.apps.zoo import main as zoo_main
from detectres.config import compose_config
from detectres.weights import zoo
from detectres.weights.restore import restore_config
from detectres.weights.zoo import CATALOG, MIRROR_ENV, ZooError, cached_path, resolve

from conftest import DATA_DIR
from detectron2_weights import write_model_zoo_pkl

NAME = "faster_rcnn_R_50_C4_1x"
# small and fast on one thread; score_thresh 0 keeps every detection, so the comparison has many boxes
FAST = ["input.min_size_test=320", "input.max_size_test=480", "model.rpn.post_nms_topk_test=100",
        "model.roi_heads.score_thresh=0.0"]


def url_path(name: str) -> str:
    return urllib.parse.urlsplit(CATALOG[name].url).path


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` (URL path -> local file); a path in ``server.cut`` announces 1000 bytes more
    than it sends and closes, one in ``server.slow`` answers only after 2 s."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path in self.server.slow:
            time.sleep(2)
        source = self.server.files.get(self.path)
        if source is None:
            self.send_error(404)
            return
        size = os.path.getsize(source)
        self.send_response(200)
        self.send_header("Content-Length", str(size + 1000 if self.path in self.server.cut else size))
        self.end_headers()
        with open(source, "rb") as f, contextlib.suppress(ConnectionError):  # a client that gave up
            shutil.copyfileobj(f, self.wfile)

    def log_message(self, *args):
        pass


def start_server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.files, server.cut, server.slow, server.requests = {}, set(), set(), []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def fixture_pkl(tmp_path_factory):
    """The Detectron2 fixture's R50-C4 weights as a model-zoo .pkl, and its sha256."""
    path = write_model_zoo_pkl(tmp_path_factory.mktemp("published") / "model_final_fixture.pkl")
    with open(path, "rb") as f:
        return path, hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory, fixture_pkl):
    """The local publisher, with the mirror and a module cache set; NAME's entry carries the fixture's
    checksum (Detectron2's real file has another md5)."""
    path, digest = fixture_pkl
    srv = start_server()
    srv.files[url_path(NAME)] = path
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MIRROR_ENV, srv.url)
        mp.setenv("DETECTRES_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setitem(CATALOG, NAME, replace(CATALOG[NAME], checksum=f"sha256:{digest[:16]}"))
        yield srv
    srv.shutdown()


@pytest.fixture(scope="module")
def downloaded(server):
    """NAME resolved once into the module cache; the requests that made."""
    server.requests.clear()
    path = resolve(NAME)
    return path, list(server.requests)


@pytest.fixture
def cache(server, tmp_path, monkeypatch):
    """An empty cache of the test's own."""
    monkeypatch.setenv("DETECTRES_CACHE", str(tmp_path / "cache"))
    server.requests.clear()
    return tmp_path / "cache"


def cached_files(cache_root) -> list[str]:
    """Every file (temporary ones included) under the cache."""
    return sorted(p for p in glob.glob(os.path.join(str(cache_root), "**"), recursive=True, include_hidden=True)
                  if os.path.isfile(p))


def serve(server, tmp_path, name: str, data: bytes) -> str:
    source = tmp_path / f"served_{name}"  # beside the test's cache, not in it
    source.write_bytes(data)
    server.files[url_path(name)] = str(source)
    return server.url + url_path(name)


def failure(name: str) -> str:
    with pytest.raises(ZooError) as info:
        resolve(name)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_download_renames_a_complete_file_and_reuses_it(server, downloaded, fixture_pkl):
    path, requests = downloaded
    assert path == os.path.join(os.environ["DETECTRES_CACHE"], "weights", NAME, "model_final_721ade.pkl")
    assert requests == [url_path(NAME)]
    assert os.listdir(os.path.dirname(path)) == ["model_final_721ade.pkl"]   # no temporary file left
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == fixture_pkl[1]
    before = len(server.requests)
    assert resolve(NAME) == path
    assert len(server.requests) == before                                    # no request: the cached file


def test_not_found_names_the_url_and_where_to_put_the_file(server, cache):
    message = failure("R-101-MSRA")
    url = server.url + url_path("R-101-MSRA")
    assert message == (f"cannot download R-101-MSRA from {url}: HTTP 404 Not Found; without network, fetch that file "
                       f"elsewhere and put it at {cache / 'weights' / 'R-101-MSRA' / 'R-101.pkl'}")
    assert cached_files(cache) == []


def test_wrong_checksum_deletes_the_download(server, cache, tmp_path):
    data = b"not resnet18" * 100
    url = serve(server, tmp_path, "resnet18-torchvision", data)
    message = failure("resnet18-torchvision")
    assert message == (f"resnet18-torchvision: checksum mismatch for {url}: expected sha256 f37072fd..., got "
                       f"{hashlib.sha256(data).hexdigest()}; the download was deleted")
    assert cached_files(cache) == []


def test_transfer_cut_short_leaves_no_file(server, cache, tmp_path):
    url = serve(server, tmp_path, "resnet50-torchvision", b"x" * 5000)
    server.cut.add(url_path("resnet50-torchvision"))
    message = failure("resnet50-torchvision")
    assert message.startswith(f"cannot download resnet50-torchvision from {url}: the transfer stopped at 5000 of "
                              "6000 bytes; without network")
    assert cached_files(cache) == []
    assert not os.path.exists(cache / "weights" / "resnet50-torchvision")


def test_no_server(cache, monkeypatch):
    with socket.socket() as s:   # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}/")
    message = failure("resnet101-torchvision")
    path = cache / "weights" / "resnet101-torchvision" / "resnet101-63fe2227.pth"
    assert message == (f"cannot download resnet101-torchvision from http://127.0.0.1:{port}/models/resnet101-63fe2227.pth: "
                       f"Connection refused; without network, fetch that file elsewhere and put it at {path}")
    assert cached_files(cache) == []


def test_timeout(server, cache, tmp_path, monkeypatch):
    serve(server, tmp_path, "resnet152-torchvision", b"late")
    server.slow.add(url_path("resnet152-torchvision"))
    monkeypatch.setattr(zoo, "TIMEOUT_S", 0.3)
    assert ": timed out; without network" in failure("resnet152-torchvision")
    assert cached_files(cache) == []


@pytest.mark.parametrize("contents, reason", [
    (b"<html>a login page</html>", "cannot read R-50.pkl as a pickle of numpy arrays: UnpicklingError"),
    (pickle.dumps({"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}), "R-50.pkl do not fit the model"),
    (pickle.dumps({"model": {"proposal_generator.rpn_head.conv.weight": np.zeros((4, 4, 3, 3), np.float32)}}),
     "it holds detectron2 weights"),
], ids=["not-a-pickle", "missing-layers", "other-format"])
def test_structure_mismatch_deletes_the_download(server, cache, tmp_path, contents, reason):
    url = serve(server, tmp_path, "R-50-MSRA", contents)
    message = failure("R-50-MSRA")
    assert message.startswith(f"R-50-MSRA: the file from {url} is not msra weights for model=r50_c4 ({reason}")
    assert message.endswith("); the download was deleted")
    assert ".detectres-tmp-" not in message
    assert cached_files(cache) == []


def test_unknown_name_lists_the_closest():
    with pytest.raises(ZooError, match=r"^unknown model zoo name 'faster_rcnn_R50_FPN'; closest: faster_rcnn_R_50_FPN_"):
        resolve("faster_rcnn_R50_FPN")
    with pytest.raises(ZooError, match=r"known: faster_rcnn_R_50_C4_1x, .*, resnet152-torchvision$"):
        resolve("nothing-like-it")


def test_zoo_weights_predict_exactly_as_the_file_by_path(server, downloaded, fixture_pkl):
    requests = len(server.requests)
    image = cv2.imread(sorted(glob.glob(os.path.join(DATA_DIR, "coco8", "val", "*.jpg")))[0])
    by_zoo = Detector.from_zoo(NAME, overrides=FAST, device="cpu").predict(image)
    by_path = Detector.from_config("r50_c4", weights=fixture_pkl[0], overrides=FAST, device="cpu").predict(image)
    assert len(by_zoo["boxes"]) > 10
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(by_zoo[key], by_path[key])
    assert by_zoo["class_names"] == by_path["class_names"]
    assert len(server.requests) == requests   # the cached file


def test_model_weights_zoo_name_in_a_config(server, downloaded):
    cfg = compose_config("predict", ["model=r50_c4", f"model.weights=zoo:{NAME}"])
    _, weights, source = restore_config(cfg)
    assert source == f"zoo:{NAME}"
    assert weights.format == "detectron2" and weights.class_names[0] == "person"


def test_command_line(server, downloaded, capsys):
    assert zoo_main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "kind", "model", "config", "box", "AP", "top-1", "cached", "URL"]
    assert lines[1].split() == [NAME, "detector", "r50_c4", "35.7", "-", "yes", server.url + url_path(NAME)]
    assert len([ln for ln in lines if not ln.startswith("*")]) == len(CATALOG) + 1
    assert zoo_main(["path", NAME]) == 0
    assert capsys.readouterr().out.strip() == cached_path(CATALOG[NAME])
    assert zoo_main(["download", NAME]) == 0
    assert capsys.readouterr().out.strip() == f"{NAME}: {downloaded[0]} (already in the cache)"


def test_predictions_of_a_zoo_model_go_under_outputs_not_into_the_cache():
    from detectres.apps.predict import default_output_dir

    assert default_output_dir("zoo:faster_rcnn_R_50_C4_1x") == os.path.join("outputs", "faster_rcnn_R_50_C4_1x",
                                                                             "predictions")
    assert default_output_dir("/runs/a/model_final.pth") == "/runs/a/predictions"
