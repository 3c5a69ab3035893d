"""``python tools/make_samples.py [FOLDER]``: write the generated sample set the wheel ships
(``tests/data/shapes8`` by default). The files are committed; ``tests/test_licence.py`` checks that this
still makes the same ones."""
from __future__ import annotations

import argparse

from detectres.data.datasets.shapes import write_samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("folder", nargs="?", default="tests/data/shapes8")
    print(write_samples(parser.parse_args(argv).folder))
    return 0
