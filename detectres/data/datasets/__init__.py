from detectres.data.datasets.coco import COCODataset
from detectres.data.datasets.shapes import ensure_shapes_dataset
from detectres.data.datasets.voc import VOCDataset

__all__ = ["COCODataset", "VOCDataset", "ensure_shapes_dataset"]
