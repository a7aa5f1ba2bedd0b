"""Image datasets: sklearn digits, torchvision sets from a local root (a fake MNIST in the real IDX format), image
folders written with PIL; no network, and a DataError naming the field for each missing or bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mgm_studies.data import DataError, make_image_dataset
from mgm_studies.data.images import DATA_ROOT_VARIABLE, DigitsData, ImageDataset, ImageFolderData, TorchvisionImages


def raises(field: str, *words: str, factory=TorchvisionImages, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        factory(**kwargs)
    assert info.value.field == field, info.value
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value


def same_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True if a and b hold the same images with the same multiplicities, in any order."""
    rows_a, counts_a = torch.unique(a.flatten(1), dim=0, return_counts=True)
    rows_b, counts_b = torch.unique(b.flatten(1), dim=0, return_counts=True)
    return torch.equal(rows_a, rows_b) and torch.equal(counts_a, counts_b)


@pytest.fixture(scope="module")
def digits() -> DigitsData:
    return DigitsData()


@pytest.fixture(scope="module")
def digits16() -> DigitsData:
    return DigitsData(size=16)


# --- digits ---------------------------------------------------------------------------------------------------------


def test_digits_shape_range_labels(digits: DigitsData) -> None:
    assert isinstance(digits, ImageDataset)
    assert digits.shape == (1, 8, 8) and digits.dim == 64 and len(digits) == 1797
    assert digits.images.shape == (1797, 1, 8, 8) and digits.images.dtype == torch.float32
    assert digits.images.min().item() == -1.0 and digits.images.max().item() == 1.0
    # sklearn's values are the integers 0..16, so every pixel is one of 17 levels v / 8 - 1.
    levels = torch.arange(17, dtype=torch.float32) / 8 - 1
    assert torch.isin(digits.images, levels).all()
    assert digits.labels is not None and digits.labels.dtype == torch.int64 and digits.labels.shape == (1797,)
    assert sorted(digits.labels.unique().tolist()) == list(range(10))
    assert digits.num_classes == 10 and digits.histogram is None


def test_sampling_is_deterministic_per_generator(digits: DigitsData) -> None:
    def draw(seed: int) -> torch.Tensor:
        return digits.sample(64, torch.Generator().manual_seed(seed))

    first = draw(0)
    assert first.shape == (64, 1, 8, 8) and first.dtype == torch.float32
    torch.manual_seed(123)  # the global generator must play no part
    assert torch.equal(draw(0), first)
    assert not torch.equal(draw(1), first)
    assert first.min() >= -1 and first.max() <= 1


def test_reference_draws_without_replacement(digits: DigitsData) -> None:
    part = digits.reference(500, torch.Generator().manual_seed(0))
    assert part.shape == (500, 1, 8, 8)
    # Capped at the set size, and then a permutation of the whole set.
    whole = digits.reference(10_000, torch.Generator().manual_seed(0))
    assert whole.shape == digits.images.shape and same_rows(whole, digits.images)
    assert torch.equal(part, digits.reference(500, torch.Generator().manual_seed(0)))


def test_digits_16_is_a_bilinear_upsampling(digits: DigitsData, digits16: DigitsData) -> None:
    assert digits16.shape == (1, 16, 16) and digits16.images.shape == (1797, 1, 16, 16)
    assert digits16.images.min() >= -1 and digits16.images.max() <= 1
    assert torch.equal(digits16.labels, digits.labels)
    pooled = F.avg_pool2d(digits16.images, 2)
    # Bilinear x2 (align_corners=False) then 2x2 mean pooling is exactly the separable filter [1/8, 3/4, 1/8] with
    # replicated edges, so the pooled image is the original, slightly blurred.
    kernel = torch.tensor([1 / 8, 3 / 4, 1 / 8])
    blurred = F.conv2d(F.pad(digits.images, (1, 1, 1, 1), mode="replicate"), torch.outer(kernel, kernel)[None, None])
    torch.testing.assert_close(pooled, blurred, atol=1e-6, rtol=0)
    # That blur moves a pixel by 0.14 on average on the [-1, 1] scale (strokes are sharp at 8x8): allow 0.2.
    assert (pooled - digits.images).abs().mean() < 0.2


def test_to_uint8_round_trip() -> None:
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    floats = values.float() / 127.5 - 1
    assert torch.equal(ImageDataset.to_uint8(floats), values)
    # Clamped outside [-1, 1], rounded to the nearest level.
    assert ImageDataset.to_uint8(torch.tensor([-3.0, 3.0, 0.0])).tolist() == [0, 255, 128]


def test_identity(digits: DigitsData, digits16: DigitsData) -> None:
    assert digits.identity() == DigitsData().identity()
    assert digits.identity() != digits16.identity()
    assert digits.identity().startswith("digits-all-8x8-c1-n1797-")
    assert digits16.identity().startswith("digits-all-16x16-c1-n1797-")


def test_factory(digits16: DigitsData) -> None:
    built = make_image_dataset("digits", size=16)
    assert isinstance(built, DigitsData) and built.identity() == digits16.identity()
    raises("name", "unknown image dataset", "digits", factory=make_image_dataset, name="imagenet")
    raises("options", "digits", factory=make_image_dataset, name="digits", colour=True)
    raises("size", "8 or 16", factory=DigitsData, size=12)


# --- torchvision: MNIST written in the raw IDX format ---------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """IDX as MNIST ships it: big-endian magic (2051 images, 2049 labels), then one big-endian size per dim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())


def write_fake_mnist(root: Path, folder: str = "MNIST") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train (6 images) and t10k (3 images) splits: torchvision checks that all four raw files exist."""
    rng = np.random.default_rng(0)
    splits = {}
    for prefix, n in (("train", 6), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images, 2051)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        splits[prefix] = (images, labels)
    return splits


def test_fake_mnist_loads_pixels_and_labels(tmp_path: Path) -> None:
    splits = write_fake_mnist(tmp_path)
    for train, prefix in ((True, "train"), (False, "t10k")):
        data = TorchvisionImages("mnist", root=str(tmp_path), train=train)
        images, labels = splits[prefix]
        assert data.shape == (1, 28, 28) and data.dim == 784 and len(data) == len(images)
        assert data.images.dtype == torch.float32 and data.images.shape == (len(images), 1, 28, 28)
        assert torch.equal(data.to_uint8(data.images), torch.from_numpy(images).unsqueeze(1))
        assert torch.equal(data.labels, torch.from_numpy(labels).long())
        assert data.images.min() == -1 and data.images.max() == 1
        assert data.num_classes == 10 and data.split == ("train" if train else "test")
        assert data.identity().startswith(f"mnist-{data.split}-28x28-c1-n{len(images)}-")
    sample = data.sample(10, torch.Generator().manual_seed(0))
    assert sample.shape == (10, 1, 28, 28)


def test_data_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(tmp_path, folder="FashionMNIST")
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))
    data = make_image_dataset("fashion_mnist")
    assert isinstance(data, TorchvisionImages) and data.root == tmp_path.resolve() and len(data) == 6
    monkeypatch.delenv(DATA_ROOT_VARIABLE)
    raises("root", DATA_ROOT_VARIABLE, "data.root", name="mnist")


def test_missing_mnist_says_where_and_how(tmp_path: Path) -> None:
    error = raises(
        "root", str(tmp_path / "MNIST" / "raw"), "download", "train-images-idx3-ubyte", name="mnist", root=str(tmp_path)
    )
    assert "copy" in error.message
    assert list(tmp_path.iterdir()) == []  # nothing was fetched or created
    # Only half of the files present: the missing ones are named.
    write_fake_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    error = raises("root", "t10k-labels-idx1-ubyte", name="mnist", root=str(tmp_path))
    assert "train-images-idx3-ubyte" not in error.message.split("missing")[1]


def test_missing_or_corrupt_cifar10(tmp_path: Path) -> None:
    raises(
        "root", str(tmp_path / "cifar-10-batches-py"), "download", "data_batch_1", name="cifar10", root=str(tmp_path)
    )
    # Files present but not CIFAR-10 (torchvision checks their md5): reported, not a crash.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for file in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"):
        (folder / file).write_bytes(b"not a pickle")
    raises("root", "could not read cifar10", str(folder), name="cifar10", root=str(tmp_path))
    raises("name", "unknown torchvision image set", name="svhn", root=str(tmp_path))


# --- image folders --------------------------------------------------------------------------------------------------


def write_folder(path: Path) -> None:
    """Sorted by relative path: a.png (RGB 20x10), a/c.bmp (grayscale 15x30), b.PNG (RGB 16x8 half black, half
    white); notes.txt is not an image."""
    (path / "a").mkdir(parents=True)
    Image.new("RGB", (20, 10), (255, 0, 128)).save(path / "a.png")
    Image.new("L", (15, 30), 40).save(path / "a" / "c.bmp")
    halves = np.zeros((8, 16, 3), dtype=np.uint8)
    halves[:, 8:] = 255
    Image.fromarray(halves).save(path / "b.PNG")
    (path / "notes.txt").write_text("not an image")


def test_image_folder_rgb(tmp_path: Path) -> None:
    write_folder(tmp_path)
    data = ImageFolderData(tmp_path, size=8)
    assert data.shape == (3, 8, 8) and len(data) == 3 and data.labels is None and data.num_classes is None
    pixels = data.to_uint8(data.images)
    assert torch.equal(pixels[0], torch.tensor([255, 0, 128], dtype=torch.uint8)[:, None, None].expand(3, 8, 8))
    assert torch.equal(pixels[1], torch.full((3, 8, 8), 40, dtype=torch.uint8))  # grayscale -> RGB
    # 16x8 is already 8 high: only the center crop, columns 4..11, half black and half white.
    expected = torch.zeros(3, 8, 8, dtype=torch.uint8)
    expected[:, :, 4:] = 255
    assert torch.equal(pixels[2], expected)
    assert data.images.min() == -1 and data.images.max() == 1
    again = make_image_dataset("image_folder", path=str(tmp_path), size=8)
    assert torch.equal(again.images, data.images) and again.identity() == data.identity()
    assert data.identity().startswith("image_folder-all-8x8-c3-n3-")
    assert torch.equal(
        data.sample(5, torch.Generator().manual_seed(3)), again.sample(5, torch.Generator().manual_seed(3))
    )


def test_image_folder_grayscale(tmp_path: Path) -> None:
    write_folder(tmp_path)
    data = ImageFolderData(tmp_path, size=5, channels=1)
    assert data.shape == (1, 5, 5) and data.images.shape == (3, 1, 5, 5)
    pixels = data.to_uint8(data.images)
    assert (pixels[0] == 91).all()  # luma of (255, 0, 128): 0.299 * 255 + 0.114 * 128 = 90.8
    assert (pixels[1] == 40).all()
    assert data.identity() != ImageFolderData(tmp_path, size=8, channels=1).identity()


def test_image_folder_errors(tmp_path: Path) -> None:
    raises("path", "not found", str(tmp_path / "nowhere"), factory=ImageFolderData, path=tmp_path / "nowhere", size=8)
    (tmp_path / "notes.txt").write_text("no images here")
    raises("path", "no image files", str(tmp_path), factory=ImageFolderData, path=tmp_path, size=8)
    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    raises("path", "cannot read image", str(tmp_path / "bad.jpg"), factory=ImageFolderData, path=tmp_path, size=8)
    raises("channels", factory=ImageFolderData, path=tmp_path, size=8, channels=4)
    raises("size", factory=ImageFolderData, path=tmp_path, size=0)
