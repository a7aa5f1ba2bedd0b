"""FID through torch-fidelity with the offline extractor, on sklearn digits (1x8x8, uint8 = value * 16 clipped):
agreement with torch-fidelity's own calculate_metrics, real vs noise, the pickle-free reference statistics cache,
cache keys, KID and precision/recall, and the weights gate in front of torch-fidelity's Inception (no real Inception
weights: a hostile file, and a randomly initialised one). One extractor is trained per module (a few seconds on 2 CPU
cores)."""

from __future__ import annotations

import io
import math
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import Tensor
from torch.utils.data import Dataset

from mgm_studies.configbase import ConfigError
from mgm_studies.metrics.extractor import (
    FEATURE_LAYER,
    INCEPTION_DEFAULT_WEIGHTS,
    LOGITS_LAYER,
    OFFLINE_EXTRACTOR_NAME,
    from_uint8,
    load_extractor,
    offline_extractor_class,
    plain_state_dict,
    register_offline_extractor,
    save_extractor,
    train_extractor,
    weights_hash,
)
from mgm_studies.metrics.fid import ExtractorSpec, fid_metrics, provenance, reference_cache_key

HALF = 898  # 1797 digits: two disjoint halves of 898


class Images(Dataset):
    """uint8 (N, C, H, W) images as a Dataset of (C, H, W) items, written independently of fid.py's own."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch and one BLAS thread: on a shared 2-core machine two threads stall at every barrier (10x slower)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor]:
    """(1797, 1, 8, 8) uint8 images and (1797,) labels 0..9."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (torch.as_tensor(data.images) * 16).clamp(0, 255).to(torch.uint8).unsqueeze(1)
    return images, torch.as_tensor(data.target)


@pytest.fixture(scope="module")
def trained(digits: tuple[Tensor, Tensor], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, float]:
    """(payload, weights file, training seconds) of the offline extractor trained on all digits."""
    images, labels = digits
    start = time.perf_counter()
    payload = train_extractor(from_uint8(images), labels, steps=300, batch_size=64, seed=0, lr=2e-3)
    seconds = time.perf_counter() - start
    path = save_extractor(payload, tmp_path_factory.mktemp("extractor") / "digits.pt")
    print(f"\noffline extractor: held-out accuracy {payload['heldout_accuracy']:.4f}, trained in {seconds:.1f} s")
    return payload, path, seconds


@pytest.fixture(scope="module")
def halves(digits: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Two disjoint random halves (898, 1, 8, 8) of the digits, and the labels of the first."""
    images, labels = digits
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    return images[order[:HALF]], images[order[HALF : 2 * HALF]], labels[order[:HALF]]


@pytest.fixture(scope="module")
def spec(trained: tuple[dict, Path, float]) -> ExtractorSpec:
    return ExtractorSpec(name="mgm-offline", weights_path=str(trained[1]))


def perturbed_weights(path: Path, to: Path) -> Path:
    """A copy of the extractor file with one weight changed by 1e-3."""
    payload = load_extractor(path)
    payload["state_dict"]["head.bias"] = payload["state_dict"]["head.bias"] + 1e-3
    return save_extractor(payload, to)


def noise_like(images: Tensor, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, images.shape, generator=generator, dtype=torch.int64).to(torch.uint8)


def test_extractor_is_far_above_chance_and_round_trips(trained: tuple[dict, Path, float]) -> None:
    payload, path, _ = trained
    assert payload["heldout_accuracy"] > 0.8  # chance is 0.1
    assert payload["num_heldout"] == 359 and payload["input_shape"] == [1, 8, 8] and payload["feature_dim"] == 64
    loaded = load_extractor(path)
    assert loaded["heldout_accuracy"] == payload["heldout_accuracy"]
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in payload["state_dict"].items())


def test_weights_hash_is_short_and_follows_the_content(trained: tuple[dict, Path, float], tmp_path: Path) -> None:
    path = trained[1]
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    assert len(weights_hash(path)) == 16 and weights_hash(copy) == weights_hash(path)
    assert weights_hash(perturbed_weights(path, tmp_path / "other.pt")) != weights_hash(path)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 28, 28), (3, 32, 32)])
def test_offline_extractor_takes_the_project_image_shapes(shape: tuple[int, int, int], tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, *shape), generator=generator, dtype=torch.int64).to(torch.uint8)
    payload = train_extractor(from_uint8(images), torch.arange(6) % 3, steps=1, batch_size=4, seed=0, lr=1e-3)
    path = save_extractor(payload, tmp_path / "fe.pt")
    extractor = offline_extractor_class()(
        OFFLINE_EXTRACTOR_NAME, [LOGITS_LAYER, FEATURE_LAYER], feature_extractor_weights_path=str(path)
    )
    logits, features = extractor(images)  # in the order requested
    assert logits.shape == (6, 3) and features.shape == (6, 64)
    with pytest.raises(ValueError, match="expects uint8"):
        extractor(from_uint8(images))
    with pytest.raises(ValueError, match="expects uint8"):
        extractor(images[:, :, :4])


def test_registration_is_idempotent_and_guards_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert register_offline_extractor() == register_offline_extractor() == OFFLINE_EXTRACTOR_NAME
    assert FEATURE_EXTRACTORS_REGISTRY[OFFLINE_EXTRACTOR_NAME] is offline_extractor_class()
    monkeypatch.setitem(FEATURE_EXTRACTORS_REGISTRY, OFFLINE_EXTRACTOR_NAME, FeatureExtractorVGG16)
    with pytest.raises(RuntimeError, match="already taken"):
        register_offline_extractor()


def _calculate_metrics(samples: Tensor, reference: Tensor, weights: Path, **options) -> dict:
    """torch-fidelity's own `calculate_metrics`, uncached, with the offline extractor: what ours must equal."""
    import torch_fidelity

    return torch_fidelity.calculate_metrics(
        input1=Images(samples),
        input2=Images(reference),
        feature_extractor="mgm-offline",
        feature_extractor_weights_path=str(weights),
        fid=True,
        cuda=False,
        cache=False,
        save_cpu_ram=True,  # no DataLoader worker processes; FID is unchanged
        verbose=False,
        **options,
    )


def test_fid_equals_torch_fidelity_calculate_metrics(
    trained: tuple[dict, Path, float], halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path
) -> None:
    import torch_fidelity

    samples, reference, _ = halves
    ours = fid_metrics(samples, reference, reference_id="digits-b", extractor=spec, cache_dir=tmp_path)["fid"]
    cached = fid_metrics(samples, reference, reference_id="digits-b", extractor=spec, cache_dir=tmp_path)["fid"]
    theirs = _calculate_metrics(samples, reference, trained[1])[torch_fidelity.KEY_METRIC_FID]
    print(f"\nFID real halves: ours {ours:.9g}, from cache {cached:.9g}, torch-fidelity {theirs:.9g}")
    assert abs(ours - theirs) <= 1e-6 and abs(cached - theirs) <= 1e-6  # absolute, FID units


def test_fid_of_real_halves_is_far_below_noise_and_dropped_classes(
    halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path
) -> None:
    samples, reference, labels = halves
    kwargs = {"reference_id": "digits-b", "extractor": spec, "cache_dir": tmp_path}
    real = fid_metrics(samples, reference, **kwargs)["fid"]
    noise = fid_metrics(noise_like(samples, seed=2), reference, **kwargs)["fid"]
    half_the_classes = fid_metrics(samples[labels < 5], reference, **kwargs)["fid"]  # mode dropping
    print(f"\nFID real halves {real:.4g}, digits 0-4 only {half_the_classes:.4g}, uniform noise {noise:.4g}")
    assert 0 <= real < 0.2 * noise
    assert real < 0.5 * half_the_classes < noise


def test_reference_statistics_are_computed_once_then_read_from_the_cache(
    halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    register_offline_extractor()
    extractor_class = FEATURE_EXTRACTORS_REGISTRY[OFFLINE_EXTRACTOR_NAME]
    images_seen: list[int] = []
    forward = extractor_class.forward

    def counting_forward(self, x: Tensor) -> tuple[Tensor, ...]:
        images_seen.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(extractor_class, "forward", counting_forward)
    samples, reference, _ = halves
    kwargs = {"reference_id": "digits-b", "extractor": spec, "cache_dir": tmp_path}
    first = fid_metrics(samples, reference, **kwargs)["fid"]
    assert sum(images_seen) == len(samples) + len(reference)
    key = reference_cache_key("digits-b", spec, reference.shape)
    cached = [f"{key}-mgm-offline-{kind}-feat.npz" for kind in ("features", "stat-fid")]
    assert sorted(p.name for p in tmp_path.iterdir()) == cached  # features too: KID and PRC reuse them; no .pt
    with np.load(tmp_path / cached[0], allow_pickle=False) as entry:
        assert entry["features"].shape == (len(reference), 64) and entry["features"].dtype == np.float32
    with np.load(tmp_path / cached[1], allow_pickle=False) as entry:
        assert entry["mu"].shape == (64,) and entry["sigma"].shape == (64, 64)

    images_seen.clear()
    second = fid_metrics(samples, reference, **kwargs)["fid"]
    assert sum(images_seen) == len(samples) and second == first  # only the samples went through the extractor
    # A hit never reads the reference: the id, not the tensor, names it (fid.py's documented contract).
    assert fid_metrics(samples, noise_like(reference, seed=3), **kwargs)["fid"] == first


def test_cache_key_follows_reference_id_shape_extractor_and_weights(
    trained: tuple[dict, Path, float], halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path
) -> None:
    samples, reference, _ = halves
    key = reference_cache_key("digits-b", spec, reference.shape)
    other_weights = ExtractorSpec(name="mgm-offline", weights_path=str(perturbed_weights(trained[1], tmp_path / "w")))
    assert key.startswith("digits-b-") and key == reference_cache_key("digits-b", spec, reference.shape)
    others = {
        reference_cache_key("digits-a", spec, reference.shape),
        reference_cache_key("digits-b", spec, (HALF - 1, 1, 8, 8)),
        reference_cache_key("digits-b", other_weights, reference.shape),
        reference_cache_key("digits-b", ExtractorSpec(name="inception-v3-compat"), reference.shape),
    }
    assert len(others) == 4 and key not in others
    cache_dir = tmp_path / "cache"
    fid_metrics(samples, reference, reference_id="digits-b", extractor=spec, cache_dir=cache_dir)
    fid_metrics(samples, reference, reference_id="digits-b", extractor=other_weights, cache_dir=cache_dir)
    fid_metrics(samples, reference, reference_id="digits-a", extractor=spec, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("*-stat-fid-feat.npz"))) == 3 and not list(cache_dir.glob("*.pt"))


def test_kid_and_precision_recall_when_asked(
    halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path
) -> None:
    samples, reference = halves[0][:300], halves[1][:300]  # KID costs 100 subsets x 3 kernels of N x N
    kwargs = {"reference_id": "digits-b300", "extractor": spec, "cache_dir": tmp_path, "kid": True, "prc": True}
    real = fid_metrics(samples, reference, **kwargs)
    noise = fid_metrics(noise_like(samples, seed=2), reference, **kwargs)
    print(f"\nreal halves {real}\nnoise {noise}")
    assert set(real) == set(noise) == {"fid", "kid", "kid_std", "precision", "recall"}
    assert all(math.isfinite(v) for v in (*real.values(), *noise.values()))
    assert real["kid"] < 0.2 * noise["kid"]
    assert real["precision"] > 0.5 and real["recall"] > 0.5 and noise["precision"] < 0.3
    assert set(fid_metrics(samples, reference, reference_id="digits-b300", extractor=spec, cache_dir=tmp_path)) == {
        "fid"
    }


def test_fid_and_kid_equal_calculate_metrics_on_a_miss_and_on_a_hit(
    trained: tuple[dict, Path, float], halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path
) -> None:
    import torch_fidelity

    samples, reference = halves[0][:300], halves[1][:300]
    theirs = _calculate_metrics(samples, reference, trained[1], kid=True, kid_subset_size=300)
    kwargs = {"reference_id": "digits-b300", "extractor": spec, "cache_dir": tmp_path, "kid": True}
    miss = fid_metrics(samples, reference, **kwargs)
    hit = fid_metrics(samples, reference.flip(2), **kwargs)  # flipped: read, it would change every value
    assert miss == hit
    expected = {
        "fid": theirs[torch_fidelity.KEY_METRIC_FID],
        "kid": theirs[torch_fidelity.KEY_METRIC_KID_MEAN],
        "kid_std": theirs[torch_fidelity.KEY_METRIC_KID_STD],
    }
    print(f"\nours {miss}\ntorch-fidelity {expected}")
    for name in ("fid", "kid"):
        assert miss[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-12)
    assert miss["kid_std"] == pytest.approx(expected["kid_std"], rel=1e-6, abs=1e-9)


def test_old_pickle_cache_entries_are_never_loaded(
    halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path
) -> None:
    samples, reference, _ = halves
    sentinel = tmp_path / "payload-ran"
    key = reference_cache_key("digits-b", spec, reference.shape)
    for kind in ("features", "stat-fid"):  # the names torch-fidelity's own cache gave them
        torch.save({"mu": Payload(sentinel)}, tmp_path / f"{key}-mgm-offline-{kind}-feat.pt")
    value = fid_metrics(samples, reference, reference_id="digits-b", extractor=spec, cache_dir=tmp_path)["fid"]
    assert math.isfinite(value) and not sentinel.exists()
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_a_pickle_in_an_npz_cache_entry_is_not_loaded_but_recomputed(
    halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path
) -> None:
    samples, reference, _ = halves
    kwargs = {"reference_id": "digits-b", "extractor": spec, "cache_dir": tmp_path}
    first = fid_metrics(samples, reference, **kwargs)["fid"]
    sentinel = tmp_path / "payload-ran"
    (stats,) = tmp_path.glob("*-stat-fid-feat.npz")
    np.savez(stats, mu=np.array([Payload(sentinel)], dtype=object), sigma=np.zeros((64, 64)))
    assert fid_metrics(samples, reference, **kwargs)["fid"] == first and not sentinel.exists()
    with np.load(stats, allow_pickle=False) as entry:  # replaced by a good entry
        assert entry["mu"].dtype == np.float32


class Payload:
    """Unpickling it runs code: it creates `path` (a stand-in for anything a crafted weights file could do)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def test_hostile_inception_weights_are_refused_without_running_them(
    halves: tuple[Tensor, Tensor, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples, reference, _ = halves
    sentinel = tmp_path / "payload-ran"
    hostile = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "x": Payload(sentinel)}, hostile)
    pickle.loads(pickle.dumps(Payload(tmp_path / "probe")))  # the payload does run when unpickled
    assert (tmp_path / "probe").exists()
    kwargs = {"reference_id": "digits-b", "cache_dir": tmp_path / "cache"}
    extractor = ExtractorSpec(name="inception-v3-compat", weights_path=str(hostile))
    with pytest.raises(ConfigError) as refused:
        fid_metrics(samples[:4], reference[:4], extractor=extractor, **kwargs)
    message = str(refused.value)
    print(f"\n{message}")
    assert refused.value.problems[0][0] == "eval.fid.weights" and str(hostile) in message
    assert "not a plain tensor state dict" in message and "weights_only=False" not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # torch's advice is not chained
    # The default file torch-fidelity would read from $TORCH_HOME/hub/checkpoints/ is gated too.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    default = tmp_path / "torch-home" / "hub" / "checkpoints" / f"{INCEPTION_DEFAULT_WEIGHTS}.pth"
    default.parent.mkdir(parents=True)
    default.write_bytes(hostile.read_bytes())
    with pytest.raises(ConfigError, match=r"eval\.fid\.weights: .*not a plain tensor state dict"):
        fid_metrics(samples[:4], reference[:4], extractor=ExtractorSpec(name="inception-v3-compat"), **kwargs)
    assert not sentinel.exists()
    with pytest.raises(ConfigError, match="not a plain tensor state dict"):  # a pickle that is not a state dict
        torch.save([torch.zeros(2)], hostile)
        plain_state_dict(hostile)


def test_plain_inception_weights_are_gated_once_and_torch_fidelity_never_unpickles_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    with monkeypatch.context() as patch:  # randomly initialised weights, without a download
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        random = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    weights = tmp_path / "random-inception.pth"
    torch.save(random, weights)
    del random
    loads: list[tuple[type, object]] = []
    load = torch.load

    def recording_load(f, *args, **kwargs):
        loads.append((type(f), kwargs.get("weights_only")))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    images = noise_like(torch.zeros(8, 3, 8, 8, dtype=torch.uint8), seed=4)
    kwargs = {
        "reference_id": "noise",
        "extractor": ExtractorSpec(name="inception-v3-compat", weights_path=str(weights)),
        "cache_dir": tmp_path / "cache",
    }
    first = fid_metrics(images[:4], images[4:], **kwargs)["fid"]
    assert loads == [(type(weights), True), (io.BytesIO, False)]  # the gate, then torch-fidelity on our own bytes
    assert fid_metrics(images[:4], images[4:], **kwargs)["fid"] == first and math.isfinite(first)
    assert len(loads) == 2  # the second evaluation neither gates nor builds again


def test_bad_inputs_are_rejected(halves: tuple[Tensor, Tensor, Tensor], spec: ExtractorSpec, tmp_path: Path) -> None:
    samples, reference, _ = halves
    kwargs = {"reference_id": "digits-b", "extractor": spec, "cache_dir": tmp_path}
    with pytest.raises(ValueError, match="uint8"):
        fid_metrics(from_uint8(samples), reference, **kwargs)
    with pytest.raises(ValueError, match="differ"):
        fid_metrics(samples[:, :, :4], reference, **kwargs)
    with pytest.raises(ValueError, match="device"):
        fid_metrics(samples, reference, device="cuda:0", **kwargs)
    with pytest.raises(ValidationError, match="weights_path"):
        ExtractorSpec(name="mgm-offline")
    with pytest.raises(ValidationError):
        ExtractorSpec(name="inception", weights_path=None)
    with pytest.raises(ValidationError):
        ExtractorSpec(name="inception-v3-compat", weights=None)


def test_provenance_names_implementation_extractor_weights_and_sets(
    trained: tuple[dict, Path, float], spec: ExtractorSpec
) -> None:
    tags = provenance(spec, "digits-b", num_reference=HALF, num_samples=500)
    assert tags == {
        "fid.implementation": "torch-fidelity-0.4.0",
        "fid.extractor": "mgm-offline",
        "fid.feature_layer": "feat",
        "fid.extractor_weights": weights_hash(trained[1]),
        "fid.reference": "digits-b",
        "fid.num_reference": str(HALF),
        "fid.num_samples": "500",
        "fid.rng_seed": "2020",
    }
    inception = provenance(ExtractorSpec(name="inception-v3-compat"), "cifar10-train", 50000, 50000)
    assert inception["fid.feature_layer"] == "2048" and "6726825d" in inception["fid.extractor_weights"]


def test_importing_the_fid_modules_does_not_import_torch_fidelity() -> None:
    code = (
        "import sys, mgm_studies.metrics.fid, mgm_studies.metrics.extractor; "
        "assert 'torch_fidelity' not in sys.modules and 'torchvision' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
