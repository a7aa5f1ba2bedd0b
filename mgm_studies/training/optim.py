"""The optimisers a run trains with, by name, and the data-parallel gradient sync between its ranks."""

from __future__ import annotations

import torch

from mgm_studies.config import TrainConfig


def average_gradients(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Data-parallel gradient sync: every rank ends with the mean gradient over ranks.

    An explicit all-reduce after `backward` rather than DistributedDataParallel's hooks: it is correct whatever the
    loss does inside (forward-mode JVPs through `torch.func`, several calls of the network, owned networks), and
    with identical initial weights (same seed on every rank) the ranks stay identical step after step.
    """
    import torch.distributed as dist

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,  # the flow-map paper's (arXiv 2505.18825, Table 2); L2 weight decay, as Adam's
}


def make_optimizer(parameters: list[torch.nn.Parameter], train: TrainConfig, overrides: dict) -> torch.optim.Optimizer:
    """`train.optimizer` (Adam, AdamW or RAdam) over `parameters`, with the objective's overrides for this phase."""
    options = train.optimizer.model_dump(exclude={"name"})
    options.update(overrides)
    return _OPTIMIZERS[train.optimizer.name](parameters, **options)
