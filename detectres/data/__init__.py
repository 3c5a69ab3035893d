"""Datasets (COCO format, embedded shapes), albumentations transforms, samplers and loaders."""
