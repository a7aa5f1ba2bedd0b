"""`train.cuda_graphs`: the whole training step of a small network replayed as one CUDA graph.

A step of an MLP 256x4 on a batch of 512 launches a few hundred kernels, each costing the host more time than the GPU
spends on it: the step is launch-bound. `StaticStep` runs the trainer's step over static tensors (the batch copied into
a fixed buffer, the learning rate and the EMA weights as device tensors filled before each step, gradients zeroed in
place and never set to None, optimisers in capturable mode), so that one capture of it can be replayed every step
(torch docs, "CUDA Graphs", whole-network capture). On CUDA the first `WARMUP_STEPS` steps run uncaptured on a side
stream, the next is captured and replayed, and every later step is one replay. With `capture=False` the same code runs
uncaptured: the CPU tests check it against the eager step.

Which objectives may use it, and why, is written once below (`ELIGIBLE`, `REFUSED`); `refusals` turns a config that
cannot use it into config errors naming `train.cuda_graphs`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mgm_studies.configbase import ConfigError
from mgm_studies.training.ema import EMA

if TYPE_CHECKING:
    from mgm_studies.config import RunConfig
    from mgm_studies.objectives import Objective

FIELD = "train.cuda_graphs"
WARMUP_STEPS = 3  # uncaptured steps before the capture, as the torch docs' examples take

_JVP = "a JVP through torch.func.jvp (forward-mode AD: ordinary kernels, no host sync)"
_TEACHER = "the frozen teacher called under no_grad"
_TARGET = "after_step moves the EMA target by a lerp of fixed decay, in place: captured with the step"
# A step captures when it is one phase ("model") of fixed shapes every step, draws all its noise from the noise
# generator, and its hooks are no-ops or in-place device updates with constants. Per objective, what makes it so:
ELIGIBLE: dict[str, str] = {
    "si": "one network call on fixed-size draws; no hooks",
    "lsd": f"{_JVP} in t and a no-grad call of the model itself",
    "esd": f"{_JVP} in s, and one in x without a graph (sg)",
    "psd_midpoint": "three network calls at fixed shapes",
    "psd_uniform": "three network calls at fixed shapes, the intermediate weight drawn from the noise generator",
    "lmd": f"{_JVP} in t and {_TEACHER}",
    "emd": f"{_JVP} in (s, x) with {_TEACHER} as tangent",
    "itvm": f"network calls at fixed shapes and {_TEACHER}; {_TARGET}",
    "pfmm": f"Heun steps of {_TEACHER}, or the EMA target's map; {_TARGET}",
    "gm_flow": "one network call on fixed-size draws; no hooks",
    "gm_jump": "one network call; the jump law's bin masses are fixed-shape tensor ops; no hooks",
    "gm_superposition": "one network call; the jump law's bin masses are fixed-shape tensor ops; no hooks",
}
REFUSED: dict[str, str] = {
    "mgm": "its step changes with the step number: a denoising warm-up, then two phases (critic and generator, each "
    "with its own optimiser) and an EMA restart where the game begins",
}


def refusals(config: RunConfig) -> list[str]:
    """Why `config` cannot train with `train.cuda_graphs` (empty: it can). Only the config is read: whether the run's
    device is CUDA is checked when the trainer is built (`StaticStep`)."""
    name = config.objective.name
    reasons = []
    if name in REFUSED:
        reasons.append(f"objective {name!r} cannot be captured: {REFUSED[name]}")
    elif name not in ELIGIBLE:
        reasons.append(f"objective {name!r} is not audited for capture (training/cuda_graph.py, ELIGIBLE)")
    if getattr(config.objective, "max_gap_anneal", None) is not None:
        reasons.append(
            "objective.max_gap_anneal grows the cap on t - s every step on the host: a captured step would keep the "
            "first cap (set max_gap_anneal null, or cuda_graphs false)"
        )
    train = config.train
    if train.precision != "float32":
        reasons.append(
            "needs precision float32: autocast inside a capture (its weight cache off) is not verified, and the small "
            "networks this path is for gain little from bfloat16"
        )
    if train.compile:
        reasons.append(
            "cannot be combined with train.compile: both remove launch overhead, and a compiled forward inside a "
            "capture is not verified; choose one"
        )
    if config.resources.workers > 1:
        reasons.append("is for one worker: data-parallel ranks all-reduce their gradients outside any graph")
    if config.resources.device == "cpu":
        reasons.append("captures CUDA work: it needs resources.device cuda (or auto on a GPU), not cpu")
    return reasons


class StaticStep:
    """One training step of a one-phase objective ("model") over static tensors, captured as a CUDA graph.

    The order is the eager `Trainer.train_step`'s: zero the gradients, loss, backward, clip to `grad_clip`, optimiser
    step, `objective.after_step`, EMA update. `__call__(x1, lr, step)` copies the batch x1 (B, *data_shape) into the
    static buffer and fills the learning rate and the EMA weights 1 - decay of training step `step` (0-based; the EMAs
    of eligible objectives start at step 0), all computed on the host, then runs (or replays) the step. It returns a
    copy of the step's values, (len(names),) on the device and not synchronised, named by `names` as the eager step
    names them (loss, grad_norm, diagnostics).

    Differences from the eager step, all within float rounding: the optimiser reads a float32 tensor learning rate (in
    capturable mode on CUDA), the EMAs move by sub-mul-add instead of a lerp, and every trained parameter has a gradient
    (zeros where the loss does not reach it; the eligible objectives reach every one). `objective.after_step` gets the
    step number of the capture: the eligible objectives do not read it.
    """

    def __init__(
        self,
        objective: Objective,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[nn.Parameter],
        ema: EMA,
        noise_generator: torch.Generator,
        *,
        grad_clip: float | None,
        capture: bool = True,
    ) -> None:
        device = next(model.parameters()).device
        if capture and device.type != "cuda":
            raise ConfigError.single(
                FIELD,
                f"captures the training step as a CUDA graph and needs a CUDA device; this run trains on {device}: "
                "train on a GPU (resources.device cuda) or set train.cuda_graphs false",
            )
        if objective.phases(0) != ("model",) or objective.networks() or objective.ema_start() != 0:
            raise ConfigError.single(FIELD, f"objective {objective.name!r} has more than one phase: not capturable")
        self.objective, self.model, self.optimizer, self.ema = objective, model, optimizer, ema
        self.parameters, self.noise_generator = list(parameters), noise_generator
        self.grad_clip, self.capture, self.device = grad_clip, capture, device
        self.names: list[str] = []
        self.graph: torch.cuda.CUDAGraph | None = None  # the captured step; None before the capture
        self._prepared = False

    def reset(self) -> None:
        """Forget the buffers and the graph (a resume replaced the optimiser's state tensors): prepared and captured
        again at the next call."""
        self.graph, self._prepared = None, False

    def __call__(self, x1: Tensor, lr: float, step: int) -> Tensor:
        if not self._prepared:
            self._prepare(x1)
        self._x1.copy_(x1, non_blocking=True)
        self._lr.fill_(lr)
        for weight, decay in zip(self._ema_weights, self.ema.decays_at(step), strict=True):
            weight.fill_(1.0 - decay)
        self._step_number = step
        if self.graph is not None:
            self.graph.replay()
        elif not self.capture:
            self._outputs = self._step()
        elif self._warm_steps < WARMUP_STEPS:
            self._warm_up()
        else:
            self._capture()
            self.graph.replay()
        return self._outputs.clone()  # the next replay overwrites the static outputs

    def _prepare(self, x1: Tensor) -> None:
        """Static buffers, a tensor learning rate, gradients that exist, optimiser state on the device."""
        self._x1 = torch.empty_like(x1, device=self.device)
        self._lr = torch.zeros((), device=self.device)
        self._ema_weights = [torch.zeros((), device=self.device) for _ in self.ema.shadows]
        for group in self.optimizer.param_groups:  # after a resume, the checkpoint's groups: set again
            group["lr"] = self._lr
            group["capturable"] = self.capture
        if self.capture:  # capturable optimisers keep their step count on the device (an eager checkpoint's is not)
            for state in self.optimizer.state.values():
                if "step" in state:
                    state["step"] = state["step"].to(device=self.device, dtype=torch.float32)
        for p in self.parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self._grads = [p.grad for p in self.parameters]
        self._warm_steps, self._step_number = 0, 0
        self._side_stream = torch.cuda.Stream(self.device) if self.capture else None
        self._prepared = True

    def _step(self) -> Tensor:
        """The step itself; every tensor it reads from outside or writes to outlives it. Returns (len(names),)."""
        torch._foreach_zero_(self._grads)  # in place: the graph keeps writing the same gradient tensors
        output = self.objective.loss("model", self.model, self._x1, self.noise_generator)
        loss = output.loss.float().mean()
        loss.backward()
        names, values = ["loss"], [loss.detach()]
        if self.grad_clip is not None:
            names.append("grad_norm")
            values.append(torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip))
        self.optimizer.step()
        self.objective.after_step(self.model, "model", self._step_number)
        names.extend(output.diagnostics)
        values.extend(v.detach().float() for v in output.diagnostics.values())
        self.ema.update_by(self.model, self._ema_weights)
        self.names = names
        return torch.stack(values)

    def _warm_up(self) -> None:
        """One real step, uncaptured, on a side stream (torch docs: warm up there before capturing, so that what is
        built lazily, optimiser moments and library workspaces, exists before the capture)."""
        current = torch.cuda.current_stream(self.device)
        self._side_stream.wait_stream(current)
        with torch.cuda.stream(self._side_stream), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")  # "runs uncaptured": on purpose, here
            self._outputs = self._step()
        current.wait_stream(self._side_stream)
        self._warm_steps += 1

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.noise_generator)  # each replay advances it as an eager step would
        with torch.cuda.graph(graph):
            self._outputs = self._step()
        self.graph = graph
