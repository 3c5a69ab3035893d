from detectres.data.datasets.coco import COCODataset, DatasetError
from detectres.data.datasets.shapes import ensure_shapes_dataset

__all__ = ["COCODataset", "DatasetError", "ensure_shapes_dataset"]
