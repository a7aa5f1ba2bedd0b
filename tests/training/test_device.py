"""`resources.device: auto` follows what Ray assigned (issue 15), and MLflow records a concrete device."""

from __future__ import annotations

import pytest

from mgm_studies.training import device as device_module
from mgm_studies.training.device import (
    TAG_DEVICE,
    TAG_DEVICE_NAME,
    TAG_RAY_GPU_IDS,
    choose_device,
    device_tags,
    ray_device_tags,
    ray_gpu_ids_tag,
)


@pytest.mark.parametrize(
    ("requested", "gpu_ids", "cuda_available", "expected"),
    [
        ("auto", [0], True, "cuda"),  # a whole GPU
        ("auto", ["1"], True, "cuda"),  # a fraction of GPU 1 (Ray answers ids, ints or strings)
        ("auto", [], True, "cpu"),  # the machine has GPUs, this trial was given none: they are other trials'
        ("auto", [0], False, "cpu"),  # a logical GPU on a machine without CUDA (tests, CPU clusters)
        ("auto", [], False, "cpu"),
        ("cpu", [0], True, "cpu"),  # asked for explicitly: kept
        ("cuda", [], True, "cuda"),
    ],
)
def test_auto_picks_cuda_exactly_when_ray_assigned_a_gpu_and_cuda_is_visible(
    requested, gpu_ids, cuda_available, expected
):
    assert choose_device(requested, gpu_ids, cuda_available) == expected


def test_ray_assigned_device_asks_ray_and_torch(monkeypatch):
    import ray
    import torch

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])  # Ray's answer stubbed: a unit test of the decision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_module.ray_assigned_device("auto") == "cuda"
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert device_module.ray_assigned_device("auto") == "cpu"


def test_the_device_tags_name_a_concrete_device(monkeypatch):
    import torch

    assert device_tags("cpu") == {TAG_DEVICE: "cpu", TAG_DEVICE_NAME: "cpu"}
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"Stub GPU {device}")
    assert device_tags("cuda") == {TAG_DEVICE: "cuda:0", TAG_DEVICE_NAME: "Stub GPU cuda:0"}
    assert device_tags("cuda:1")[TAG_DEVICE] == "cuda:1"


def test_the_ray_gpu_ids_tag_names_what_ray_assigned(monkeypatch):
    """Trials packed on one GPU share its id (tests/studies/test_packing.py runs that with a real Ray)."""
    import ray

    assert ray_gpu_ids_tag([0]) == {TAG_RAY_GPU_IDS: "0"}
    assert ray_gpu_ids_tag(["0", "1"]) == {TAG_RAY_GPU_IDS: "0,1"}
    assert ray_gpu_ids_tag([]) == {TAG_RAY_GPU_IDS: "none"}
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["2"])
    assert ray_device_tags("cpu") == {TAG_DEVICE: "cpu", TAG_DEVICE_NAME: "cpu", TAG_RAY_GPU_IDS: "2"}
