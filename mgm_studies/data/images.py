"""Image datasets held in memory as one (N, C, H, W) float32 tensor in [-1, 1]: sklearn digits, torchvision sets
(MNIST, Fashion-MNIST, CIFAR-10) read from a local root, and a folder of image files.

Pixels map to [-1, 1] as x = v / 127.5 - 1 for uint8 v, and back with `ImageDataset.to_uint8`, the form that FID
consumes. There is no KL histogram for images (`histogram = None`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mgm_studies.configbase import PositiveInt, StrictModel
from mgm_studies.data.base import DataError, VectorDataset, build_registered

DATA_ROOT_VARIABLE = "MGM_STUDIES_DATA"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageDataset(VectorDataset):
    """Images sampled uniformly from a fixed set.

    Attributes:
        images: (N, C, H, W) float32 in [-1, 1].
        labels: (N,) int64 class indices, or None for unlabelled sets.
        shape: (C, H, W); `dim` = C * H * W.
        num_classes: number of classes, or None for unlabelled sets.
        split: which part of the source set, e.g. "train", "test" or "all".
    """

    histogram = None
    split: str
    images: Tensor
    labels: Tensor | None
    num_classes: int | None

    def _set_images(self, images: Tensor, labels: Tensor | None, num_classes: int | None, split: str) -> None:
        self.images = images.to(torch.float32).clamp(-1.0, 1.0).contiguous()
        self.labels = None if labels is None else labels.to(torch.int64)
        self.num_classes = num_classes
        self.split = split
        channels, height, width = (int(v) for v in self.images.shape[1:])
        self.shape = (channels, height, width)
        self.dim = channels * height * width
        self._identity: str | None = None
        self._on_device: dict[str, Tensor] = {}  # copies of `images` on training devices (`sample_on`)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, C, H, W) float32 in [-1, 1]: uniform draws with replacement."""
        return self.sample_on(n, generator, torch.device("cpu"))

    def sample_on(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """`sample` gathered on `device` from a copy of the set held there (made on first use): the indices are drawn on
        the CPU from `generator` whatever the device, so the batches are the same."""
        device = torch.device(device)
        if device.type == "cpu":
            images = self.images
        else:
            images = self._on_device.get(str(device))
            if images is None:
                images = self._on_device[str(device)] = self.images.to(device)
        index = torch.randint(len(self), (n,), generator=generator)
        return images[index.to(device, non_blocking=True)]

    def reference(self, n: int, generator: torch.Generator) -> Tensor:
        """(min(n, N), C, H, W) float32 in [-1, 1]: distinct images, in random order."""
        index = torch.randperm(len(self), generator=generator)[: min(n, len(self))]
        return self.images[index]

    @staticmethod
    def to_uint8(x: Tensor) -> Tensor:
        """Floats in [-1, 1] (any shape) to uint8 in [0, 255], clamped and rounded: what FID consumes."""
        return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def identity(self) -> str:
        """A short stable key for this image set, e.g. "digits-all-8x8-c1-n1797-<12 hex>", to cache FID statistics.

        The hash covers the uint8 pixels (what FID sees), so it is the same on every machine and float path.
        """
        if self._identity is None:
            digest = hashlib.sha256(self.to_uint8(self.images).numpy().tobytes()).hexdigest()[:12]
            channels, height, width = self.shape
            self._identity = f"{self.name}-{self.split}-{height}x{width}-c{channels}-n{len(self)}-{digest}"
        return self._identity

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, shape={self.shape}, n={len(self)})"


def from_uint8(pixels: Tensor) -> Tensor:
    """uint8 (..., H, W) values 0..255 to float32 in [-1, 1] (also the FID extractor's input map)."""
    return pixels.to(torch.float32) / 127.5 - 1.0


class DigitsData(ImageDataset):
    """scikit-learn's handwritten digits: 1797 grayscale 8x8 images, 10 classes; ships with sklearn (offline).

    Args:
        size: 8 (the original pixels, values 0..16 scaled to [-1, 1]) or 16 (bilinear upsampling,
            antialias off, align_corners=False).
    """

    name = "digits"

    def __init__(self, size: Literal[8, 16] = 8):
        if size not in (8, 16):
            raise DataError("size", f"digits come at size 8 or 16, got {size!r}")
        from sklearn.datasets import load_digits  # sklearn is slow to import; only this dataset needs it

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> [-1, 1]
        if size == 16:
            images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
        self._set_images(images, torch.as_tensor(digits.target), num_classes=10, split="all")


_MNIST_FILES = tuple(f"{part}-{kind}-ubyte" for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1"))
# name -> (torchvision class, folder under the root that torchvision reads, the files it requires there)
_TORCHVISION_SETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mnist": ("MNIST", "MNIST/raw", _MNIST_FILES),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", _MNIST_FILES),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    ),
}


class TorchvisionImages(ImageDataset):
    """MNIST or Fashion-MNIST (1x28x28) or CIFAR-10 (3x32x32), read with torchvision from a local root; 10 classes.

    Args:
        name: "mnist", "fashion_mnist" or "cifar10".
        root: the folder holding torchvision's layout (e.g. `<root>/MNIST/raw`); default `$MGM_STUDIES_DATA`.
        download: let torchvision download the set into the root if it is missing (never done otherwise).
        train: the training split (True) or the test split (False).

    Raises DataError("root") when no root is given or the files are missing, saying where it looked.
    """

    def __init__(
        self,
        name: Literal["mnist", "fashion_mnist", "cifar10"],
        root: str | Path | None = None,
        download: bool = False,
        train: bool = True,
    ):
        if name not in _TORCHVISION_SETS:
            raise DataError("name", f"unknown torchvision image set {name!r}; known: {', '.join(_TORCHVISION_SETS)}")
        self.name = name
        class_name, folder, files = _TORCHVISION_SETS[name]
        if root is None:
            root = os.environ.get(DATA_ROOT_VARIABLE) or None
            if root is None:
                raise DataError(
                    "root",
                    f"no data root for {name!r}: set data.root, or the environment variable ${DATA_ROOT_VARIABLE}",
                )
        self.root = Path(root).expanduser().resolve()
        where = self.root / folder
        missing = [file for file in files if not (where / file).is_file()]
        if missing and not download:
            raise DataError(
                "root",
                f"{name} not found: looked in {where} (torchvision's {class_name} reads `{folder}` under the root "
                f"{self.root}), missing {', '.join(missing)}. Set `data.download: true` on a machine with internet "
                f"access to fetch it there, or copy the extracted (not .gz) files into {where}.",
            )
        import torchvision.datasets  # slow to import; only these sets need it

        try:
            source = getattr(torchvision.datasets, class_name)(str(self.root), train=train, download=download)
        except Exception as exc:  # torchvision raises RuntimeError, URLError, AssertionError... for bad or absent files
            action = "download or read" if download else "read"
            raise DataError("root", f"could not {action} {name} in {where}: {exc}") from None
        pixels = torch.as_tensor(source.data)
        # MNIST-like sets hold (N, H, W) uint8; CIFAR-10 holds (N, H, W, C) uint8 as a numpy array.
        pixels = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
        labels = torch.as_tensor(source.targets, dtype=torch.int64)
        self._set_images(from_uint8(pixels), labels, num_classes=10, split="train" if train else "test")


class ImageFolderData(ImageDataset):
    """Every .png/.jpg/.jpeg/.bmp/.webp file under a folder (recursive, sorted by relative path), no labels.

    Args:
        path: the folder.
        size: output side: each image is resized so that its shorter side is `size`, then center-cropped to
            size x size (PIL, Lanczos, as edm's dataset_tool center crop).
        channels: 1 (converted to PIL mode "L") or 3 (mode "RGB").

    Raises DataError("path") for a missing folder, a folder without images, or an unreadable file (named).
    """

    name = "image_folder"

    def __init__(self, path: str | Path, size: int, channels: Literal[1, 3] = 3):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise DataError("size", f"size must be a positive integer, got {size!r}")
        if channels not in (1, 3):
            raise DataError("channels", f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise DataError("path", f"image folder not found: {self.path}")
        files = sorted(
            (file for file in self.path.rglob("*") if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()),
            key=lambda file: file.relative_to(self.path).as_posix(),
        )
        if not files:
            raise DataError("path", f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {self.path}")
        pixels = torch.stack([_read_image(file, size, "L" if channels == 1 else "RGB") for file in files])
        self._set_images(from_uint8(pixels), None, num_classes=None, split="all")


def _read_image(file: Path, size: int, mode: str) -> Tensor:
    """(C, size, size) uint8: `file` converted to `mode`, shorter side resized to `size`, center-cropped."""
    from PIL import Image

    try:
        with Image.open(file) as opened:
            image = opened.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise DataError("path", f"cannot read image {file}: {exc}") from None
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.LANCZOS)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.uint8).reshape(size, size, -1)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


IMAGE_DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "digits": DigitsData,
    "mnist": functools.partial(TorchvisionImages, "mnist"),
    "fashion_mnist": functools.partial(TorchvisionImages, "fashion_mnist"),
    "cifar10": functools.partial(TorchvisionImages, "cifar10"),
    "image_folder": ImageFolderData,
}


def make_image_dataset(name: str, **options) -> ImageDataset:
    """The image dataset registered as `name`, built with `options` (e.g. `size=16`, or `root="/data"`).

    Raises DataError("name") for an unknown name, DataError("options") for options the dataset does not take.
    """
    return build_registered(IMAGE_DATASETS, "image", name, **options)


class ImageDataConfig(StrictModel):
    """What every image data set's section is: `build()` passes its options to `make_image_dataset`."""

    def build(self) -> ImageDataset:
        return make_image_dataset(self.name, **self.model_dump(exclude={"name"}))


class DigitsDataConfig(ImageDataConfig):
    """scikit-learn's handwritten digits (1797 images, shipped with the package: offline), 8x8 or resized to 16x16."""

    name: Literal["digits"]
    size: Literal[8, 16] = 8


class TorchvisionDataConfig(ImageDataConfig):
    """MNIST, Fashion-MNIST (1x28x28) or CIFAR-10 (3x32x32) through torchvision, from a local folder: `root`, else
    $MGM_STUDIES_DATA. Nothing is downloaded unless `download: true`."""

    name: Literal["mnist", "fashion_mnist", "cifar10"]
    root: str | None = None
    download: bool = False
    train: bool = True


class ImageFolderDataConfig(ImageDataConfig):
    """Every image file under `path` (recursive), resized and center-cropped to size x size."""

    name: Literal["image_folder"]
    path: str
    size: PositiveInt = 32
    channels: Literal[1, 3] = 3
