"""detectres: ``pip install .`` (a wheel carries the configs and the sample data inside the package, so
every tool runs from any folder), ``pip install -e .`` (a checkout: configs/ and tests/data/ are read in
place). Console commands: see ``detectres/apps/commands.py``."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# project folder -> where it goes inside the built package
PACKAGE_DATA_DIRS = {"configs": "configs", "tests/data/coco8": "samples/coco8", "tests/data/images": "samples/images"}
COMMANDS = ["train", "test", "predict", "demo", "check-data", "ablation", "benchmark", "train-benchmark", "convert",
            "convert-data", "gpu-latency", "scoring-benchmark", "scale-benchmark", "plot", "export"]


class BuildWithData(build_py):
    """Copies the configs and the sample data into the built package (wheels and regular installs)."""

    def run(self):
        super().run()
        for source, target in PACKAGE_DATA_DIRS.items():
            shutil.copytree(ROOT / source, Path(self.build_lib) / "detectres" / target, dirs_exist_ok=True)


setup(
    name="detectres",
    version="0.1.0",
    description="ResNet + Faster R-CNN (C4) object detection: faithful, fast, dependable",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
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
    # pytest-xdist: the suite runs in two processes (pytest.ini), both cores of a 2-core machine busy
    extras_require={"dev": ["pytest>=7.4", "pytest-xdist>=3.5", "hypothesis>=6.80", "onnx>=1.15", "onnxruntime>=1.17",
                            "mlflow>=2.16", "wandb>=0.18"],
                    "export": ["onnx>=1.15", "onnxruntime>=1.17"],
                    "mlflow": ["mlflow>=2.16"],
                    "wandb": ["wandb>=0.18"]},
    cmdclass={"build_py": BuildWithData},
    entry_points={"console_scripts": [f"detectres-{c}=detectres.apps.commands:{c.replace('-', '_')}"
                                      for c in COMMANDS]},
)
