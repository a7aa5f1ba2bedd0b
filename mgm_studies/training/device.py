"""Which device a run trains on, and how MLflow records it.

`resources.device: auto` under Ray follows what Ray assigned: a trial or worker that Ray gave a GPU (any fraction of
one, `resources.gpus_per_worker: 0.25` included) trains on CUDA when CUDA is visible; one without a GPU trains on the
CPU even on a machine that has GPUs (they belong to other trials). The decision is a pure function of Ray's answer,
so it is tested without Ray or a GPU.

Under Ray a run also records the GPU ids Ray assigned it (`mgm.ray_gpu_ids`): trials packed on one GPU by a fractional
ask (`--gpus-per-trial 0.25`) share an id. It is Ray's id, the node's physical GPU; `mgm.device` is the index the
process sees (`cuda:0`: Ray sets `CUDA_VISIBLE_DEVICES` to the assigned GPUs), so the two may differ.
"""

from __future__ import annotations

from collections.abc import Sequence

TAG_DEVICE = "mgm.device"  # the device used: "cpu", "cuda:0" (never "auto")
TAG_DEVICE_NAME = "mgm.device_name"  # torch.cuda.get_device_name, or "cpu"
TAG_RAY_GPU_IDS = "mgm.ray_gpu_ids"  # under Ray: the GPU ids Ray assigned, comma-separated ("0", "0,1"), or "none"


def choose_device(requested: str, gpu_ids: Sequence[object], cuda_available: bool) -> str:
    """`requested` (`resources.device`) resolved: `auto` is "cuda" when Ray assigned this process a GPU (`gpu_ids`:
    `ray.get_gpu_ids()`, non-empty for any fraction of a GPU) and CUDA is visible, else "cpu"; "cpu" and "cuda" are
    kept as asked."""
    if requested != "auto":
        return requested
    return "cuda" if gpu_ids and cuda_available else "cpu"


def ray_assigned_device(requested: str) -> str:
    """`choose_device` with Ray's answer for this process (a Tune trial or a Ray Train worker)."""
    import ray
    import torch

    return choose_device(requested, ray.get_gpu_ids(), torch.cuda.is_available())


def concrete_device(device: str) -> str:
    """`device` with its index: "cuda" becomes "cuda:<current device>"; "cpu" stays."""
    import torch

    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(resolved)


def device_tags(device: str) -> dict[str, str]:
    """The MLflow tags of the device a run trains on: `mgm.device` ("cpu", "cuda:0") and `mgm.device_name`."""
    import torch

    concrete = concrete_device(device)
    name = torch.cuda.get_device_name(torch.device(concrete)) if concrete.startswith("cuda") else "cpu"
    return {TAG_DEVICE: concrete, TAG_DEVICE_NAME: name}


def ray_gpu_ids_tag(gpu_ids: Sequence[object]) -> dict[str, str]:
    """The MLflow tag of the GPUs Ray assigned (`ray.get_gpu_ids()`): `mgm.ray_gpu_ids`, "none" when it gave none."""
    return {TAG_RAY_GPU_IDS: ",".join(str(i) for i in gpu_ids) or "none"}


def ray_device_tags(device: str) -> dict[str, str]:
    """`device_tags` in a Ray trial or worker, with the GPU ids Ray assigned this process (`mgm.ray_gpu_ids`)."""
    import ray

    return {**device_tags(device), **ray_gpu_ids_tag(ray.get_gpu_ids())}
