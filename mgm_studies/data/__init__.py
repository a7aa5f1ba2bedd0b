"""Vector datasets: 2-D toys, gaussians in any dimension, user files; each declares its KL histogram box.
Image datasets (digits, torchvision sets, image folders) have no box. Each module holds its datasets and their config
section (whose `build()` makes the dataset); the sections register here by `data.name`."""

from typing import Annotated, Union, get_args

from pydantic import Field

from mgm_studies.data.base import DataError, HistogramSpec, VectorDataset, data_shape
from mgm_studies.data.files import FileDataConfig
from mgm_studies.data.gaussian import GaussianData, GaussianDataConfig
from mgm_studies.data.images import (
    DigitsDataConfig,
    ImageDataConfig,
    ImageFolderDataConfig,
    TorchvisionDataConfig,
    make_image_dataset,
)
from mgm_studies.data.toy2d import TOY_DATASETS, ToyDataConfig, make_toy_dataset

# A new data set is one module (dataset and config section) and one entry here.
_SECTIONS = (
    ToyDataConfig,
    GaussianDataConfig,
    FileDataConfig,
    DigitsDataConfig,
    TorchvisionDataConfig,
    ImageFolderDataConfig,
)
DATASETS: dict[str, type] = {  # `data.name` -> its config section
    name: section for section in _SECTIONS for name in get_args(section.model_fields["name"].annotation)
}
IMAGE_DATA = tuple(name for name, section in DATASETS.items() if issubclass(section, ImageDataConfig))

DataConfig = Annotated[Union[_SECTIONS], Field(discriminator="name")]  # noqa: UP007

__all__ = [
    "DATASETS",
    "IMAGE_DATA",
    "TOY_DATASETS",
    "DataConfig",
    "DataError",
    "GaussianData",
    "HistogramSpec",
    "VectorDataset",
    "data_shape",
    "make_image_dataset",
    "make_toy_dataset",
]
