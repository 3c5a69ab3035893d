"""detectres: ``pip install .`` (a wheel carries the configs and the sample data inside the package, so
every tool runs from any folder), ``pip install -e .`` (a checkout: configs/ and tests/data/ are read in
place). Console commands: see ``detectres/apps/commands.py``."""
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# project folder -> where it goes inside the built package
# The wheel ships only samples this project made (THIRD_PARTY.md; tests/test_licence.py holds both to it):
# the COCO and Ultralytics photos in tests/data stay test data of the repository.
PACKAGE_DATA_DIRS = {"configs": "configs", "tests/data/shapes8": "samples/shapes8"}
VERSION = re.search(r'^__version__ = "([^"]+)"$', (ROOT / "detectres" / "version.py").read_text(), re.M).group(1)
COMMANDS = ["train", "test", "predict", "demo", "check-data", "ablation", "benchmark", "train-benchmark", "convert",
            "convert-data", "gpu-latency", "scoring-benchmark", "scale-benchmark", "plot", "export", "zoo",
            "deploy-benchmark"]


class BuildWithData(build_py):
    """Copies the configs and the sample data into the built package (wheels and regular installs)."""

    def run(self):
        super().run()
        for source, target in PACKAGE_DATA_DIRS.items():
            shutil.copytree(ROOT / source, Path(self.build_lib) / "detectres" / target, dirs_exist_ok=True)


setup(
    name="detectres",
    version=VERSION,
    description="ResNet + Faster R-CNN object detection (C4 and FPN, Detectron2-compatible): faithful, fast, dependable",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license_expression="Apache-2.0",
    license_files=["LICENSE", "NOTICE", "THIRD_PARTY.md"],
    keywords=["object detection", "faster r-cnn", "resnet", "detectron2", "computer vision", "pytorch", "coco"],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    project_urls={"Download": "https://pypi.org/project/detectres/"},
    python_requires=">=3.10",
    packages=find_packages(include=["detectres", "detectres.*"]),
    install_requires=[
        "torch>=2.4,<3",
        "torchvision>=0.19,<1",
        "numpy>=1.24",
        "pillow>=9",
        "pycocotools>=2.0.7",
        "faster-coco-eval>=1.6",
        "opencv-python-headless>=4.8",
        "albumentations>=2.0,<3",
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3,<2.4",
        "PyYAML>=5.4",  # already required by omegaconf; detectres reads its own shipped YAML with the safe loader
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "matplotlib>=3.7",
        "msgspec>=0.18",
    ],
    # onnx + onnxruntime: the export tests run the exported file (and users who deploy with ONNX need them);
    # hypothesis: the property test that no stored config can make a restore import or read anything;
    # mlflow, wandb: runtime.loggers=[mlflow] / [wandb] (the tests read a run back with their clients);
    # pytest-xdist: the suite runs in two processes (pytest.ini), both cores of a 2-core machine busy;
    # build, twine: the release test builds the sdist and the wheel and runs `twine check` on them;
    # openvino, nncf: export --formats openvino (--precision int8 quantizes with NNCF) and running export folders
    extras_require={"dev": ["pytest>=7.4", "pytest-xdist>=3.5", "hypothesis>=6.80", "onnx>=1.15", "onnxruntime>=1.17",
                            "mlflow>=2.16", "wandb>=0.18", "build>=1.2", "twine>=6.1", "openvino>=2024.4", "nncf>=2.14"],
                    "export": ["onnx>=1.15", "onnxruntime>=1.17"],
                    "openvino": ["onnx>=1.15", "openvino>=2024.4", "nncf>=2.14"],
                    "mlflow": ["mlflow>=2.16"],
                    "wandb": ["wandb>=0.18"]},
    cmdclass={"build_py": BuildWithData},
    entry_points={"console_scripts": [f"detectres-{c}=detectres.apps.commands:{c.replace('-', '_')}"
                                      for c in COMMANDS]},
)
