"""Data checks: the problems a dataset can have, what to do about each, and a report of what was done.

Each problem kind has a policy, set in ``data.checks`` (``configs/data/checks/default.yaml``):

- ``fix``: repair it and say so (clip a box to the image, give a duplicate annotation a new id,
  rescale boxes to the real image size, read a missing image size from the file);
- ``drop_annotation``: leave that one annotation out;
- ``skip_image``: leave the whole image out;
- ``fail``: stop before training starts, listing every problem found.

The defaults never crash mid-epoch and never train on a box that was changed without saying so.
``scan`` says how much of each image file is read when the dataset loads: ``exists`` (a stat),
``header`` (size, EXIF orientation and truncation), or ``decode`` (every pixel). A ``fail`` policy
for a problem that only reading finds (and ``size_mismatch: fix``) raises the scan to the level that
finds it.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Mapping

logger = logging.getLogger(__name__)

FIX, DROP, SKIP, FAIL = "fix", "drop_annotation", "skip_image", "fail"
ACTION_WORDS = {FIX: "fixed", DROP: "annotation dropped", SKIP: "image skipped", FAIL: "fatal"}


@dataclass(frozen=True)
class ProblemKind:
    description: str
    policies: tuple[str, ...]  # allowed; the first is the default
    fix: str = ""              # what "fix" does, when allowed


PROBLEM_KINDS: dict[str, ProblemKind] = {
    "malformed_file": ProblemKind("an annotation file that does not parse (JSON/XML) or lacks required fields",
                                  (SKIP, FAIL)),
    "bad_image_entry": ProblemKind("an image entry without a usable id, file name, width or height",
                                   (FIX, SKIP, FAIL), "read the size from the image file"),
    "duplicate_image_id": ProblemKind("two image entries with the same id (or one file listed twice)", (SKIP, FAIL)),
    "missing_image": ProblemKind("an image file that does not exist", (SKIP, FAIL)),
    "unreadable_image": ProblemKind("an image file that cannot be decoded", (SKIP, FAIL)),
    "truncated_image": ProblemKind("an image file that was cut short", (SKIP, FAIL)),
    "size_mismatch": ProblemKind("an image whose file size differs from the annotated width/height",
                                 (SKIP, FIX, FAIL), "rescale the boxes to the file's size"),
    "orphan_annotation": ProblemKind("an annotation whose image id has no image entry", (DROP, FAIL)),
    "duplicate_annotation_id": ProblemKind("two annotations with the same id", (FIX, DROP, FAIL),
                                           "give the later one a new id"),
    "unknown_category": ProblemKind("an annotation whose category is not in the class list", (DROP, SKIP, FAIL)),
    "malformed_box": ProblemKind("a box that is missing, not four numbers, NaN or infinite", (DROP, SKIP, FAIL)),
    "nonpositive_box": ProblemKind("a box with zero or negative width or height", (DROP, SKIP, FAIL)),
    "box_outside_image": ProblemKind("a box reaching more than 1 px outside the image (or wholly outside)",
                                     (FIX, DROP, SKIP, FAIL), "clip it to the image"),
}
IMAGE_FILE_KINDS = ("missing_image", "unreadable_image", "truncated_image", "size_mismatch")
SCAN_LEVELS = ("exists", "header", "decode")
# the scan level at which each image-file problem is found before training
_FOUND_BY = {"missing_image": "exists", "truncated_image": "header", "size_mismatch": "header",
             "unreadable_image": "decode"}


class DataCheckError(ValueError):
    """Data that a ``fail`` policy (or an unusable file) stops on; the message lists every problem.
    ``report`` is the :class:`DataReport` when the checks ran (None for an unusable file)."""

    def __init__(self, message: str, report: "DataReport | None" = None):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str    # the file, and the annotation or image id
    detail: str
    action: str   # a policy

    def __str__(self) -> str:
        return f"{self.where}: {self.detail} [{self.kind}, {ACTION_WORDS[self.action]}]"


class UnknownProblemKind(KeyError, ValueError):
    """A ``data.checks`` key that names no problem kind (a user error: one line in the tools)."""


def resolve_policies(policies: Mapping[str, str] | None) -> dict[str, str]:
    """Defaults updated with ``policies``; an unknown kind or a policy the kind does not allow raises."""
    out = {kind: spec.policies[0] for kind, spec in PROBLEM_KINDS.items()}
    for kind, policy in (policies or {}).items():
        if kind not in PROBLEM_KINDS:
            raise UnknownProblemKind(f"data.checks.{kind}: unknown problem kind; known kinds: {', '.join(PROBLEM_KINDS)}")
        allowed = PROBLEM_KINDS[kind].policies
        if policy not in allowed:
            raise ValueError(f"data.checks.{kind}={policy!r} is not allowed; choose one of {', '.join(allowed)}")
        out[kind] = policy
    return out


def scan_level(requested: str, policies: Mapping[str, str]) -> str:
    """``requested`` raised, where needed, so that every ``fail`` policy on an image file is found at load."""
    if requested not in SCAN_LEVELS:
        raise ValueError(f"data.checks.scan={requested!r}: choose one of {', '.join(SCAN_LEVELS)}")
    needed = [_FOUND_BY[k] for k in IMAGE_FILE_KINDS if policies[k] == FAIL] + [requested]
    if policies["size_mismatch"] == FIX:  # boxes are rescaled at load, so sizes are read at load
        needed.append("header")
    return max(needed, key=SCAN_LEVELS.index)


class DataReport:
    """Problems found in one dataset (``name``), each with the action its policy chose."""

    def __init__(self, name: str, policies: Mapping[str, str] | None = None):
        self.name = name
        self.policies = resolve_policies(policies)
        self.problems: list[Problem] = []

    def add(self, kind: str, where: str, detail: str, *, can_fix: bool = True) -> str:
        """Record a problem; returns the action to take. ``can_fix=False`` (a box wholly outside the
        image cannot be clipped into it) turns a ``fix`` policy into the next allowed action."""
        action = self.policies[kind]
        if action == FIX and not can_fix:
            action = next(p for p in PROBLEM_KINDS[kind].policies if p != FIX)
        self.problems.append(Problem(kind, where, detail, action))
        return action

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.action == FAIL]

    def counts(self) -> Counter:
        return Counter((p.kind, p.action) for p in self.problems)

    def summary(self, examples: int = 3) -> str:
        """A count per problem kind and action, with the first ``examples`` messages of each (-1: all)."""
        if not self.problems:
            return f"{self.name}: no problems found"
        lines = [f"{self.name}: {len(self.problems)} problem(s)"]
        for (kind, action), n in sorted(self.counts().items()):
            lines.append(f"  {kind:<24} {n:>6}  {ACTION_WORDS[action]}")
            shown = [p for p in self.problems if p.kind == kind and p.action == action]
            shown = shown if examples < 0 else shown[:examples]
            lines.extend(f"      {p.where}: {p.detail}" for p in shown)
        return "\n".join(lines)

    def raise_if_fatal(self) -> None:
        fatal = self.fatal
        if fatal:
            listing = "\n".join(f"  {p}" for p in fatal[:50])
            more = f"\n  ... and {len(fatal) - 50} more" if len(fatal) > 50 else ""
            raise DataCheckError(
                f"{self.name}: {len(fatal)} problem(s) with policy 'fail':\n{listing}{more}\n"
                "Fix the data, or choose another policy with data.checks.<kind>=fix|drop_annotation|skip_image "
                "(see configs/data/checks/default.yaml); python tools/check_data.py lists every problem.",
                report=self,
            )
