"""The model zoo from the command line (``tools/zoo.py``, ``detectres-zoo``): ``list`` the published weights
detectres loads by name, ``download NAME`` one into the cache, print the ``path NAME`` of its file."""
from __future__ import annotations

import argparse
import sys

from detectres.weights.zoo import CATALOG, ZooEntry, cached_path, is_cached, resolve, source_url, zoo_entry


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table_rows(entries: list[ZooEntry]) -> list[list[str]]:
    head = ["name", "kind", "model config", "box AP", "top-1", "cached", "URL"]
    rows = [[e.name, e.kind, e.config + ("*" if e.overrides else ""), number(e.box_ap), number(e.top1),
             "yes" if is_cached(e) else "no", source_url(e)] for e in entries]
    return [head, *rows]


def print_table(entries: list[ZooEntry]) -> None:
    """One line per entry, columns aligned; the overrides of a starred model config below."""
    rows = table_rows(entries)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for e in entries:
        if e.overrides:
            print(f"* {e.name}: model={e.config} {' '.join(e.overrides)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the catalog: name, kind, model config, box AP, top-1, whether cached, URL")
    get = sub.add_parser("download", help="download entries into the cache (once; a cached file is kept)")
    get.add_argument("names", nargs="+", metavar="NAME")
    where = sub.add_parser("path", help="the cache path of an entry's file (where to put it by hand)")
    where.add_argument("name", metavar="NAME")
    a = p.parse_args(argv)
    try:
        if a.action == "list":
            print_table(list(CATALOG.values()))
        elif a.action == "download":
            for name in a.names:
                cached = is_cached(zoo_entry(name))
                print(f"{name}: {resolve(name)}" + (" (already in the cache)" if cached else ""))
        else:
            entry = zoo_entry(a.name)
            print(cached_path(entry))
            if not is_cached(entry):
                print(f"({entry.name} is not in the cache yet: detectres-zoo download {entry.name})", file=sys.stderr)
    except (ValueError, OSError) as e:  # a user error: one line, exit 1 (as every tool reports them)
        from detectres.apps.cli import fail

        fail(e)
    return 0
