"""Vector datasets: 2-D toys, gaussians in any dimension, user files; each declares its KL histogram box.
Image datasets (digits, torchvision sets, image folders) have no box."""

from mgm_studies.data.base import DataError, HistogramSpec, VectorDataset, data_shape
from mgm_studies.data.files import FileData
from mgm_studies.data.gaussian import GaussianData
from mgm_studies.data.images import (
    IMAGE_DATASETS,
    DigitsData,
    ImageDataset,
    ImageFolderData,
    TorchvisionImages,
    make_image_dataset,
)
from mgm_studies.data.toy2d import TOY_DATASETS, make_toy_dataset

__all__ = [
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "DataError",
    "DigitsData",
    "FileData",
    "GaussianData",
    "HistogramSpec",
    "ImageDataset",
    "ImageFolderData",
    "TorchvisionImages",
    "VectorDataset",
    "data_shape",
    "make_image_dataset",
    "make_toy_dataset",
]
