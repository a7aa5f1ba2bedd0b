"""An offline feature extractor for FID on small images (1 or 3 channels, 8x8 to 32x32), its torch-fidelity hook, and
the one place FID's extractors are built (`feature_extractor`), with the weights gate in front of torch-fidelity's
Inception.

Inception-v3 needs downloaded weights and sees 8x8 digits upsampled to 299x299; a compact classifier trained on the
project's own labelled images needs no network and gives features that separate the classes. Its numbers are
comparable only between runs that use the same weights file, which is why `weights_hash` goes into every cache key
and provenance tag.

Weights and pickles. torch-fidelity 0.4 reads Inception weights with `torch.load(..., weights_only=False)`, which runs
any code a crafted file carries. `plain_state_dict` first loads the file with `weights_only=True` (tensors and plain
containers only; anything else is refused with a ConfigError on `eval.fid.weights`), and torch-fidelity is then
handed an in-memory copy of that state dict re-saved by us, never the file. The offline extractor's files are read
with `weights_only=True` (`load_extractor`) and need no gate.
"""

from __future__ import annotations

import hashlib
import io
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgm_studies.configbase import ConfigError
from mgm_studies.data.images import from_uint8

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_DEFAULT_WEIGHTS = "weights-inception-2015-12-05-6726825d"  # torch-fidelity's download; the hash is its name
WEIGHTS_FIELD = "eval.fid.weights"
OFFLINE_EXTRACTOR_NAME = "mgm-offline"  # the name registered with torch-fidelity
FEATURE_LAYER = "feat"  # (N, feature_dim) penultimate activations: FID, KID, precision/recall
LOGITS_LAYER = "logits"  # (N, num_classes) classification head: a classifier-based metric such as ISC
PAYLOAD_FORMAT = 1
_HELDOUT_FRACTION = 0.2


class SmallClassifier(nn.Module):
    """Three conv blocks (3x3 conv, GroupNorm, SiLU; stride 2 in blocks 2 and 3), global average pooling, a feature
    layer (linear + SiLU) and a linear classification head. Any spatial size >= 1 works (8x8 -> 2x2 before pooling).

    Args:
        input_shape: (C, H, W) of the images it is trained on.
        num_classes: classes of the head.
        width: channels of block 1; blocks 2 and 3 have 2x and 4x.
        feature_dim: size of the feature layer.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *, width: int = 32, feature_dim: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = input_shape[0]
        for index, out_channels in enumerate((width, 2 * width, 4 * width)):
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, stride=1 if index == 0 else 2, padding=1),
                nn.GroupNorm(min(8, out_channels), out_channels),
                nn.SiLU(),
            ]
            in_channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.Linear(in_channels, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) float in [-1, 1] -> (features (N, feature_dim), logits (N, num_classes))."""
        features = self.feature(self.blocks(x).mean(dim=(2, 3)))
        return features, self.head(features)


def train_extractor(
    images: Tensor,
    labels: Tensor,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float,
    width: int = 32,
    feature_dim: int = 64,
) -> dict[str, Any]:
    """Train a `SmallClassifier` with Adam and cross-entropy on a seeded 80% split; measure accuracy on the rest.

    Args:
        images: (N, C, H, W) float in [-1, 1], N >= 2.
        labels: (N,) integer classes 0..K-1.
        steps: optimizer steps, each on `batch_size` images drawn with replacement from the training split.
        seed: fixes the split, the initialisation and the batches (the global RNG is left as it was).
    Returns the payload for `save_extractor` ("heldout_accuracy": a fraction in [0, 1]).
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    if labels.shape != images.shape[:1] or labels.is_floating_point() or len(images) < 2:
        raise ValueError(f"labels must be (N,) = ({len(images)},) integers, N >= 2, got {tuple(labels.shape)}")
    if steps < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need steps >= 0, batch_size >= 1, lr > 0; got {steps}, {batch_size}, {lr}")
    labels = labels.to(torch.int64)
    num_classes = int(labels.max()) + 1
    input_shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    num_heldout = max(1, round(_HELDOUT_FRACTION * len(images)))
    heldout, train = order[:num_heldout], order[num_heldout:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallClassifier(input_shape, num_classes, width=width, feature_dim=feature_dim).to(images.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = train[torch.randint(len(train), (batch_size,), generator=generator)].to(images.device)
        _, logits = model(images[batch])
        loss = F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        heldout = heldout.to(images.device)
        accuracy = (model(images[heldout])[1].argmax(dim=1) == labels[heldout]).float().mean().item()
    return {
        "format": PAYLOAD_FORMAT,
        "state_dict": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "width": width,
        "feature_dim": feature_dim,
        "heldout_accuracy": accuracy,
        "num_heldout": num_heldout,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "lr": lr,
    }


def save_extractor(payload: dict[str, Any], path: str | Path) -> Path:
    """Write a `train_extractor` payload with torch.save (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_extractor(path: str | Path) -> dict[str, Any]:
    """Read a payload written by `save_extractor` (torch.load with weights_only=True: tensors and plain values)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_FORMAT:
        raise ValueError(f"{path} is not an mgm-offline extractor file (format {PAYLOAD_FORMAT})")
    return payload


def weights_hash(path: str | Path) -> str:
    """The first 16 hex digits of the sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@cache
def offline_extractor_class() -> type[nn.Module]:
    """The torch-fidelity `FeatureExtractorBase` subclass for `SmallClassifier` (defined on first use, because
    importing torch_fidelity imports torchvision)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class OfflineFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity builds it as cls(name, features_list, **calculate_metrics kwargs); the weights file comes
        from `feature_extractor_weights_path`. forward: uint8 (N, C, H, W) with (C, H, W) the trained input shape
        -> tuple of the requested layers, in `features_list` order."""

        is_mgm_offline = True  # tells `register_offline_extractor` that a registered class is one of ours

        def __init__(
            self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None, **kwargs
        ):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"{name} needs feature_extractor_weights_path (a file from save_extractor)")
            payload = load_extractor(feature_extractor_weights_path)
            self.input_shape = tuple(int(v) for v in payload["input_shape"])
            sizes = {key: int(payload[key]) for key in ("width", "feature_dim")}
            self.net = SmallClassifier(self.input_shape, int(payload["num_classes"]), **sizes)
            self.net.load_state_dict(payload["state_dict"])
            self.net.eval()

        @staticmethod
        def get_provided_features_list() -> tuple[str, str]:
            return (FEATURE_LAYER, LOGITS_LAYER)

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return LOGITS_LAYER if metric == "isc" else FEATURE_LAYER

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> Tensor:
            return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{self.name} expects uint8 (N, {', '.join(map(str, self.input_shape))}) images (the shape it "
                    f"was trained on), got {x.dtype} {tuple(x.shape)}"
                )
            features, logits = self.net(from_uint8(x))
            by_layer = {FEATURE_LAYER: features, LOGITS_LAYER: logits}
            return tuple(by_layer[layer] for layer in self.features_list)

    return OfflineFeatureExtractor


def register_offline_extractor() -> str:
    """Register the offline extractor with torch-fidelity's global registry under `OFFLINE_EXTRACTOR_NAME`; returns
    the name. Idempotent: a class of ours already there (even from a reloaded module) is kept; any other class
    registered under the name is an error, since torch-fidelity would otherwise run it silently."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    existing = FEATURE_EXTRACTORS_REGISTRY.get(OFFLINE_EXTRACTOR_NAME)
    if existing is None:
        register_feature_extractor(OFFLINE_EXTRACTOR_NAME, offline_extractor_class())
    elif not getattr(existing, "is_mgm_offline", False):
        raise RuntimeError(f"torch-fidelity extractor {OFFLINE_EXTRACTOR_NAME!r} is already taken by {existing!r}")
    return OFFLINE_EXTRACTOR_NAME


def inception_weights_file(weights_path: str | None) -> Path:
    """The Inception weights file: `weights_path`, else torch-fidelity's `<hub dir>/checkpoints/<default>.pth`
    ($TORCH_HOME/hub), downloaded there first when absent, as torch-fidelity itself would."""
    if weights_path is not None:
        return Path(weights_path)
    path = Path(torch.hub.get_dir()) / "checkpoints" / f"{INCEPTION_DEFAULT_WEIGHTS}.pth"
    if not path.is_file():
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # to a temporary file, then moved into place
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path), progress=False)
        except OSError as error:  # URLError is an OSError
            raise ConfigError.single(
                WEIGHTS_FIELD,
                f"no Inception weights at {path} and downloading them failed ({error}): copy the file "
                "there or give its path",
            ) from None
    return path


def plain_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The weights gate: `torch.load(path, map_location="cpu", weights_only=True)`, which refuses pickled objects
    other than tensors and plain containers without running them, and a check that the result is {name: Tensor}.
    Raises ConfigError on `eval.fid.weights` naming the file otherwise."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:  # whatever the reason, the file is not usable weights
        # torch's own message suggests loading the file unsafely; quote only what it found.
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed|\.? Please|\n|$)", str(error))
        reason = found.group(1).strip() if found else type(error).__name__
        raise ConfigError.single(WEIGHTS_FIELD, f"{path} is not a plain tensor state dict ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ConfigError.single(WEIGHTS_FIELD, f"{path} is not a plain tensor state dict (it holds {type(state)})")
    return state


def feature_extractor(name: str, weights_path: str | None, layer: str, device: str) -> nn.Module:
    """torch-fidelity's extractor `name` ("mgm-offline" or "inception-v3-compat") giving feature `layer`, in eval mode
    on `device` ("cpu" or "cuda": torch-fidelity's current CUDA device). Built, and its weights gated, once per
    (weights file, modification time, size, layer, device) in this process."""
    if name == OFFLINE_EXTRACTOR_NAME:
        if weights_path is None:
            raise ValueError(f"{name} needs a weights file (from save_extractor)")
        register_offline_extractor()
        path = Path(weights_path)
    else:
        path = inception_weights_file(weights_path)
    stat = path.stat()
    cuda_index = torch.cuda.current_device() if device == "cuda" else None
    return _built_extractor(name, str(path.resolve()), stat.st_mtime_ns, stat.st_size, layer, device, cuda_index)


@lru_cache(maxsize=2)
def _built_extractor(
    name: str, path: str, mtime_ns: int, size: int, layer: str, device: str, cuda_index: int | None
) -> nn.Module:
    from torch_fidelity.utils import create_feature_extractor

    weights: str | io.BytesIO = path  # the offline extractor reads its file with weights_only=True
    if name != OFFLINE_EXTRACTOR_NAME:  # torch-fidelity's torch.load(weights_only=False) sees only our own bytes
        weights = io.BytesIO()
        torch.save(plain_state_dict(path), weights)
        weights.seek(0)
    return create_feature_extractor(
        name, [layer], cuda=device == "cuda", feature_extractor_weights_path=weights, verbose=False
    )
