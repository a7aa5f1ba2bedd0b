"""Data-parallel training: two real processes with a gloo process group, the Trainer's gradient all-reduce."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import small_config

from mgm_studies.config import parse_run_config
from mgm_studies.runs import trainer_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A small U-Net on 8x8 digits (issue 6: data parallel on images).
IMAGES = {
    "data": {"name": "digits"},
    "model": {"name": "unet", "channels": 8, "channel_mult": [1, 2], "norm_groups": 4, "embedding_dim": 16},
    "eval": {"metrics": ["sw2"], "steps": [1], "num_samples": 16, "reference_samples": 16},
}


def _rank(rank: int, port: int, objective: str, synced: bool, out: str, images: bool = False) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        sections = {"objective": {"name": objective}, "train": {"steps": 8, "batch_size": 32}}
        config = parse_run_config(small_config(**sections, **(IMAGES if images else {})))
        trainer = trainer_for(config, rank=rank, world_size=2 if synced else 1)
        trainer.run()
        torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _train_two_ranks(tmp_path, objective: str, synced: bool, images: bool = False) -> tuple[dict, dict]:
    mp.spawn(_rank, args=(_free_port(), objective, synced, str(tmp_path), images), nprocs=2, join=True)
    return (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))


def test_ranks_stay_identical_with_the_all_reduce_even_through_jvp_objectives(tmp_path):
    # lsd differentiates the network with torch.func.jvp inside the loss: the explicit all-reduce does not care.
    first, second = _train_two_ranks(tmp_path, "lsd", synced=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    # The control: the same two ranks without the sync draw different batches and drift apart.
    first, second = _train_two_ranks(tmp_path, "lsd", synced=False)
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_ranks_stay_identical_training_a_unet_on_images_through_a_jvp_objective(tmp_path):
    first, second = _train_two_ranks(tmp_path, "lsd", synced=True, images=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    first, second = _train_two_ranks(tmp_path, "lsd", synced=False, images=True)
    assert not all(torch.equal(first[k], second[k]) for k in first)
