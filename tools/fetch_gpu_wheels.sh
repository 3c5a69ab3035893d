#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels the lent GPU machine lacks, into .whl/ (git-ignored
# through .git/info/exclude). The GPU image already has torch, torchvision, opencv-python-headless,
# pillow, tqdm, tensorboard and pytest (.library/device/KINDS.md); it runs Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
          "${plat[@]}" -d .whl "$@"; }
get hydra-core==1.3.8 omegaconf==2.3.0 pycocotools albumentations==2.0.8 albucore==0.0.24 \
    pydantic pydantic-core annotated-types typing-inspection typing-extensions stringzilla simsimd
# antlr4 4.9.3 (what omegaconf 2.3 needs) ships only as a source archive: build its pure-Python wheel here
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
