"""Data: reading images, preprocessing, datasets, training augmentation and the built-in synthetic dataset."""

from .augment import TrainAugmentDataset, check_labels, collate
from .datasets import COCODetection, DataReport, DetectionDataset, YOLODetection
from .preprocess import letterbox, preprocess, read_image
from .synthetic import make_synthetic_dataset

__all__ = [
    "COCODetection",
    "DataReport",
    "DetectionDataset",
    "TrainAugmentDataset",
    "YOLODetection",
    "check_labels",
    "collate",
    "letterbox",
    "make_synthetic_dataset",
    "preprocess",
    "read_image",
]
