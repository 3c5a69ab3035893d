from setuptools import find_packages, setup

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
        "tqdm>=4.60",
        "tensorboard>=2.12",
    ],
    extras_require={"dev": ["pytest>=7.4"]},
)
