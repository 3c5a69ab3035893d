"""The model zoo: published weights by name, downloaded once into ``$DETECTRES_CACHE/weights/``.

``resolve("faster_rcnn_R_50_C4_3x")`` returns the local file (downloading it the first time);
``model.weights=zoo:NAME`` and ``Detector.from_zoo(NAME)`` go through it, then through the same safe
readers and checks as a path. A download goes to a temporary file beside its final place and is renamed
only once it is complete, matches the publisher's checksum and loads strictly into its entry's model
config; anything else leaves no file behind and is one line. ``DETECTRES_ZOO_MIRROR=URL`` replaces the
publishers' scheme and host (the path is kept), for sites without internet access and for tests.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from tqdm import tqdm

from detectres.config.paths import cache_dir
from detectres.utils.file_io import file_mode, reporting_full_disk, temp_file

logger = logging.getLogger(__name__)

ZOO_PREFIX = "zoo:"
MIRROR_ENV = "DETECTRES_ZOO_MIRROR"
TIMEOUT_S = 60.0        # per connection attempt and per read, not for the whole transfer
CHUNK_BYTES = 1 << 20


class ZooError(ValueError):
    """A model zoo name that cannot be served: unknown, not downloadable, or a file that is not what the
    entry says (the message is one line)."""


class DownloadFailed(Exception):
    """The network did not deliver the whole file (internal: :func:`download` words the error)."""


@dataclass(frozen=True)
class ZooEntry:
    """One published weight file: where it is, what runs it and what it scores.

    ``config``: the ``configs/model/`` name it loads into, with ``overrides`` on top; ``format``: the
    reader (:data:`detectres.weights.loading.FORMATS`); ``checksum``: ``"ALGO:HEXPREFIX"`` as the
    publisher gives it (Detectron2 names its files after their md5, torchvision after their sha256),
    None where it gives none."""

    name: str
    kind: str           # "detector" (COCO Faster R-CNN) or "backbone" (ImageNet ResNet)
    url: str
    config: str
    format: str
    box_ap: float | None = None     # COCO val2017 box AP, as published
    top1: float | None = None       # ImageNet top-1 accuracy (%), as published
    checksum: str | None = None
    overrides: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return os.path.basename(urllib.parse.urlsplit(self.url).path)


D2 = "https://dl.fbaipublicfiles.com/detectron2"
TV = "https://download.pytorch.org/models"
# torchvision's ImageNet files in a model config written for MSRA weights: RGB input, ImageNet mean/std
TV_INPUT = ("model.input_format=RGB", "model.pixel_mean=[123.675,116.28,103.53]",
            "model.pixel_std=[58.395,57.12,57.375]")


def detectron2_entry(name: str, model_id: int, file: str, config: str, box_ap: float) -> ZooEntry:
    """A Detectron2 COCO-Detection Faster R-CNN; its file name ends with its md5's first 6 hex digits."""
    return ZooEntry(name=name, kind="detector", url=f"{D2}/COCO-Detection/{name}/{model_id}/{file}", config=config,
                    format="detectron2", box_ap=box_ap, checksum=f"md5:{file.rsplit('_', 1)[1].split('.')[0]}")


def torchvision_entry(depth: int, file: str, config: str, top1: float, overrides: tuple[str, ...] = ()) -> ZooEntry:
    """A torchvision IMAGENET1K_V1 ResNet; its file name ends with its sha256's first 8 hex digits."""
    return ZooEntry(name=f"resnet{depth}-torchvision", kind="backbone", url=f"{TV}/{file}", config=config,
                    format="torchvision", top1=top1, checksum=f"sha256:{file.rsplit('-', 1)[1].split('.')[0]}",
                    overrides=overrides)


ENTRIES = (
    detectron2_entry("faster_rcnn_R_50_C4_1x", 137257644, "model_final_721ade.pkl", "r50_c4", 35.7),
    detectron2_entry("faster_rcnn_R_50_C4_3x", 137849393, "model_final_f97cb7.pkl", "r50_c4", 38.4),
    detectron2_entry("faster_rcnn_R_101_C4_3x", 138204752, "model_final_298dad.pkl", "r101_c4", 41.1),
    detectron2_entry("faster_rcnn_R_50_FPN_1x", 137257794, "model_final_b275ba.pkl", "r50_fpn", 37.9),
    detectron2_entry("faster_rcnn_R_50_FPN_3x", 137849458, "model_final_280758.pkl", "r50_fpn", 40.2),
    detectron2_entry("faster_rcnn_R_101_FPN_3x", 137851257, "model_final_f6e8b1.pkl", "r101_fpn", 42.0),
    ZooEntry(name="R-50-MSRA", kind="backbone", url=f"{D2}/ImageNetPretrained/MSRA/R-50.pkl", config="r50_c4",
             format="msra"),
    ZooEntry(name="R-101-MSRA", kind="backbone", url=f"{D2}/ImageNetPretrained/MSRA/R-101.pkl", config="r101_c4",
             format="msra"),
    torchvision_entry(18, "resnet18-f37072fd.pth", "r18_c4", 69.758, TV_INPUT),
    torchvision_entry(34, "resnet34-b627a593.pth", "r18_c4", 73.314, (*TV_INPUT, "model.backbone.depth=34")),
    torchvision_entry(50, "resnet50-0676ba61.pth", "r50_c4_tv", 76.130),
    torchvision_entry(101, "resnet101-63fe2227.pth", "r101_c4_tv", 77.374),
    torchvision_entry(152, "resnet152-394f9c45.pth", "r101_c4_tv", 78.312, ("model.backbone.depth=152",)),
)
CATALOG: dict[str, ZooEntry] = {e.name: e for e in ENTRIES}


def zoo_entry(name: str) -> ZooEntry:
    """The catalog entry ``name``; an unknown name is one line naming the closest known ones."""
    if name in CATALOG:
        return CATALOG[name]
    close = difflib.get_close_matches(name, list(CATALOG), n=3, cutoff=0.6)
    listed = f"closest: {', '.join(close)} (detectres-zoo list shows all)" if close else f"known: {', '.join(CATALOG)}"
    raise ZooError(f"unknown model zoo name {name!r}; {listed}")


def source_url(entry: ZooEntry) -> str:
    """The entry's URL, its scheme and host replaced by ``$DETECTRES_ZOO_MIRROR`` when that is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return entry.url
    return mirror.rstrip("/") + urllib.parse.urlsplit(entry.url).path


def cached_path(entry: ZooEntry) -> str:
    """Where the entry's file lives once downloaded (or put by hand): ``<cache>/weights/<name>/<file>``."""
    return os.path.join(cache_dir(), "weights", entry.name, entry.filename)


def is_cached(entry: ZooEntry) -> bool:
    return os.path.isfile(cached_path(entry))


def resolve(name: str) -> str:
    """The local file of zoo entry ``name``: the cached one, else downloaded (once) and checked."""
    entry = zoo_entry(name)
    path = cached_path(entry)
    if not os.path.isfile(path):
        download(entry, path)
    return path


def local_weights(path: str) -> str:
    """``path`` itself, or for ``zoo:NAME`` the entry's local file (see :func:`resolve`)."""
    return resolve(path[len(ZOO_PREFIX):]) if path.startswith(ZOO_PREFIX) else path


def download(entry: ZooEntry, path: str) -> None:
    """Download ``entry`` to ``path`` through a temporary file in the same folder, renamed only once it is
    complete and checked; every failure removes the temporary file."""
    url = source_url(entry)
    fd, tmp = temp_file(path, suffix=os.path.splitext(path)[1])  # the suffix picks the reader
    logger.info("downloading %s from %s to %s", entry.name, url, path)
    try:
        with reporting_full_disk(path), os.fdopen(fd, "wb") as out:
            fetch(url, out, entry.name)
        verify_checksum(entry, tmp, url)
        problem = structure_problem(entry, tmp)
        if problem is not None:
            raise ZooError(f"{entry.name}: the file from {url} is not {entry.format} weights for model={entry.config} "
                           f"({problem.replace(tmp, entry.filename)}); the download was deleted")
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except DownloadFailed as e:
        raise ZooError(f"cannot download {entry.name} from {url}: {e}; without network, fetch that file elsewhere "
                       f"and put it at {path}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
            with contextlib.suppress(OSError):  # the entry's folder, when nothing else is in it
                os.rmdir(os.path.dirname(tmp))


def fetch(url: str, out, label: str) -> None:
    """Copy the body at ``url`` into ``out`` with a progress bar (on a terminal); a refused connection, a
    failed name lookup, a timeout, an HTTP error or a body shorter than its Content-Length raises
    :class:`DownloadFailed` with the reason."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadFailed(network_reason(e)) from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
                  leave=False, disable=None) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as e:
                    raise DownloadFailed(network_reason(e)) from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise DownloadFailed(f"the transfer stopped at {received} of {total} bytes")


def network_reason(error: BaseException) -> str:
    """Why a request failed, in a few words (``HTTP 404 Not Found``, ``Connection refused``, ``timed out``)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def file_digest(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(entry: ZooEntry, path: str, url: str) -> None:
    """Refuse a file whose digest does not start with the entry's published prefix."""
    if entry.checksum is None:
        return
    algorithm, expected = entry.checksum.split(":", 1)
    actual = file_digest(path, algorithm)
    if not actual.startswith(expected):
        raise ZooError(f"{entry.name}: checksum mismatch for {url}: expected {algorithm} {expected}..., got "
                       f"{actual}; the download was deleted")


def structure_problem(entry: ZooEntry, path: str) -> str | None:
    """Why the file at ``path`` cannot serve ``entry`` (None when it can): it must pass the safe readers as
    ``entry.format`` and load strictly into the entry's model config, as ``model.weights`` would load it."""
    from detectres.config import compose_config
    from detectres.data.coco_names import COCO_CLASSES
    from detectres.modeling.build import build_model
    from detectres.weights.loading import load_weights_into, read_weights

    try:
        weights = read_weights(path)
        if weights.format != entry.format:
            return f"it holds {weights.format} weights"
        cfg = compose_config("predict", [f"model={entry.config}", *entry.overrides])
        model = build_model(cfg.model, num_classes=len(weights.class_names or COCO_CLASSES))
        load_weights_into(model, weights, strict=True, source=entry.filename)
    except (ValueError, OSError) as e:
        text = " ".join(line.strip() for line in str(e).splitlines())
        return text if len(text) <= 300 else text[:300].rsplit(" ", 1)[0] + " ..."
    return None
