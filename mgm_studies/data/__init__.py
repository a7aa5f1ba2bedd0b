"""Vector datasets: 2-D toys, gaussians in any dimension, user files; each declares its KL histogram box."""

from mgm_studies.data.base import DataError, HistogramSpec, VectorDataset
from mgm_studies.data.files import FileData
from mgm_studies.data.gaussian import GaussianData
from mgm_studies.data.toy2d import TOY_DATASETS, make_toy_dataset

__all__ = [
    "TOY_DATASETS",
    "DataError",
    "FileData",
    "GaussianData",
    "HistogramSpec",
    "VectorDataset",
    "make_toy_dataset",
]
