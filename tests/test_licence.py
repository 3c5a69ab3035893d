"""The licence and the provenance list: every data file the repository, the sdist or the wheel carries is
listed in THIRD_PARTY.md with its source and licence, only files this project made ship in the wheel, and
the shipped samples are what the generator makes (so "made by detectres" is checked, not asserted)."""
import json
import os
import re

import cv2
import numpy as np
import pytest

from detectres.config import PROJECT_ROOT
from detectres.data.datasets.shapes import write_samples

NOTICE = PROJECT_ROOT / "THIRD_PARTY.md"
SAMPLES = "tests/data/shapes8"  # the wheel's detectres/samples/shapes8 (setup.py)
DATA_FOLDERS = (SAMPLES, "tests/data", "tests/fixtures", "docs/images")
ROW = re.compile(r"^\| `([^`]+)` \|.*\| (yes|no) \|$", re.M)


def listed(text: str) -> dict[str, bool]:
    """path -> whether it ships in the wheel, for every row of the notice's tables."""
    return {path: wheel == "yes" for path, wheel in ROW.findall(text)}


def files_under(root, folders) -> set[str]:
    found = set()
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(root / folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            found |= {os.path.relpath(os.path.join(dirpath, f), root) for f in filenames}
    return found


def unlisted(root, folders, text: str) -> list[str]:
    """The data files under ``folders`` that the notice does not list."""
    return sorted(files_under(root, folders) - set(listed(text)))


def test_the_licence_is_apache_2():
    text = (PROJECT_ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
    assert "Apache License, Version 2.0" in (PROJECT_ROOT / "NOTICE").read_text()


def test_every_data_file_is_listed_and_every_listed_file_exists():
    text = NOTICE.read_text()
    missing = unlisted(PROJECT_ROOT, DATA_FOLDERS, text)
    assert not missing, f"not listed in THIRD_PARTY.md (add each with its source and licence): {missing}"
    stale = [p for p in listed(text) if not (PROJECT_ROOT / p).is_file()]
    assert not stale, f"THIRD_PARTY.md lists files that do not exist: {stale}"


def test_an_unlisted_file_is_caught(tmp_path):
    (tmp_path / SAMPLES / "val").mkdir(parents=True)
    (tmp_path / SAMPLES / "val" / "000000.png").write_bytes(b"listed")
    (tmp_path / SAMPLES / "val" / "photo.jpg").write_bytes(b"someone else's")
    text = f"| `{SAMPLES}/val/000000.png` | detectres | CC0-1.0 | yes |\n"
    assert unlisted(tmp_path, [SAMPLES], text) == [f"{SAMPLES}/val/photo.jpg"]


def test_only_generated_samples_ship_in_the_wheel():
    marked = {p for p, wheel in listed(NOTICE.read_text()).items() if wheel}
    in_samples = files_under(PROJECT_ROOT, [SAMPLES])  # the folder setup.py ships, all of it
    assert marked == in_samples, f"shipped but not marked yes: {sorted(in_samples - marked)}; marked yes but not " \
                                 f"in {SAMPLES}: {sorted(marked - in_samples)}"


def test_the_shipped_samples_are_what_the_generator_makes(tmp_path):
    made = write_samples(str(tmp_path / "shapes8"))
    assert files_under(tmp_path / "shapes8", ["."]) == files_under(PROJECT_ROOT / SAMPLES, ["."])
    for split in ("train", "val"):
        name = f"annotations/instances_{split}.json"
        stored = json.loads((PROJECT_ROOT / SAMPLES / name).read_text())
        assert json.loads(open(os.path.join(made, name)).read()) == stored
        assert {img["license"] for img in stored["images"]} == {lic["id"] for lic in stored["licenses"]}
        for image in stored["images"]:
            a, b = (cv2.imread(os.path.join(r, split, image["file_name"])).astype(np.int16)
                    for r in (made, str(PROJECT_ROOT / SAMPLES)))
            # the same drawing (exact here; another OpenCV may anti-alias an edge pixel differently)
            assert a.shape == b.shape and np.abs(a - b).mean() < 0.5, image["file_name"]


def test_the_changelog_names_this_version():
    from detectres import __version__

    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d[^\]]*)\] - (\d{4}-\d\d-\d\d)$", changelog, re.M)
    assert releases and releases[0][0] == __version__, releases[:2]


@pytest.mark.parametrize("path", ["setup.py", "detectres/__init__.py"])
def test_the_version_is_written_in_one_place(path):
    assert not re.search(r"""version\s*=\s*["']\d""", (PROJECT_ROOT / path).read_text(), re.I)
