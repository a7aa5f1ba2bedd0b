"""The shared Trainer, handed its parts (parts.py): loop, evaluate, checkpoint, resume (state.py holds what a
checkpoint holds). It never imports Ray or MLflow, nor builds from the config what it is handed.

One step: objective -> loss -> backward -> grad clip -> optimiser -> every EMA. Per-step losses stay on the
device and are checked and reported every `log_interval` steps (and before every evaluation or checkpoint), so the
hot loop holds no host sync; a non-finite loss or gradient norm ends the run as "diverged" at the exact step where it
first appeared, and no checkpoint is ever written after it. With `train.cuda_graphs` the same step runs over static
tensors and is replayed as one CUDA graph (cuda_graph.py).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mgm_studies.config import RunConfig
from mgm_studies.configbase import ConfigError
from mgm_studies.convergence import AreaTracker
from mgm_studies.data import data_shape
from mgm_studies.evaluation import evaluate
from mgm_studies.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mgm_studies.training.cuda_graph import StaticStep
from mgm_studies.training.ema import EMA
from mgm_studies.training.optim import average_gradients, make_optimizer
from mgm_studies.training.parts import RunParts
from mgm_studies.training.reporter import Evaluation, NullReporter, Reporter
from mgm_studies.training.schedule import lr_factor
from mgm_studies.training.state import exported_state, restore_state, trainer_state
from mgm_studies.training.window import PendingStep, report_window

Status = Literal["finished", "diverged"]


@dataclass
class TrainResult:
    status: Status
    step: int  # the last step done; for "diverged", the step whose loss or gradient was not finite
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation
    checkpoint: Path | None = None  # the newest resumable checkpoint
    steps_per_s: float = 0.0


class Trainer:
    """Trains `parts` (`runs.build_run(config)`) on `device`, resuming from the newest checkpoint in `checkpoint_dir`
    when there is one. Ray executors give it their own `reporter`, `rank` and `world_size`; only rank 0 evaluates and
    writes checkpoints.
    """

    def __init__(
        self,
        config: RunConfig,
        parts: RunParts,
        *,
        checkpoint_dir: Path | None = None,
        reporter: Reporter | None = None,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        progress: bool = False,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_dir = checkpoint_dir
        self.reporter = reporter or NullReporter()
        self.rank, self.world_size = rank, world_size
        self.progress = progress
        self.dataset, self.interpolant, self.objective = parts.dataset, parts.interpolant, parts.objective
        train = config.train
        with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching the caller's RNG
            torch.manual_seed(train.seed)
            shape = data_shape(self.dataset)
            self.model = self._placed(parts.build_network(self.objective.model_kind))
            self.objective.attach(self.model, shape, lambda kind: self._placed(parts.build_network(kind)))
        # What the losses call: the model, or its compiled forward (same parameters; checkpoints, EMAs and
        # evaluation use the eager `model`).
        self.train_model: torch.nn.Module = torch.compile(self.model) if train.compile else self.model
        # One optimiser per phase: "model", and any network the objective owns (MGM's critic). Each trains its
        # network and whatever the objective trains with it (the flow maps' learned loss weight), under one clip.
        self.networks: dict[str, torch.nn.Module] = {"model": self.model, **self.objective.networks()}
        self.trained_with = {phase: self.objective.trained_with(phase) for phase in self.networks}
        self.trained_parameters = {
            phase: [*network.parameters(), *(p for m in self.trained_with[phase].values() for p in m.parameters())]
            for phase, network in self.networks.items()
        }
        self.optimizers = {
            phase: make_optimizer(self.trained_parameters[phase], train, self.objective.optimizer_options(phase))
            for phase in self.networks
        }
        self.base_lrs = {phase: opt.param_groups[0]["lr"] for phase, opt in self.optimizers.items()}
        self.ema = EMA(self.model, train.ema_decays, warmup=train.ema_warmup)
        # Data on the CPU, noise on the device: two generators, both checkpointed.
        self.data_generator = torch.Generator().manual_seed(train.seed * 1_000_003 + rank)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(train.seed * 1_000_003 + 7919 + rank)
        self.step = 0
        self.last_evaluation: Evaluation | None = None
        self.areas = AreaTracker()  # each evaluation's metrics so far: area_<metric>/nfe-K (convergence speed)
        self.resumed_from: Path | None = None
        self._last_loss = float("nan")
        # train.cuda_graphs: the step over static tensors, captured once and replayed (cuda_graph.py).
        self.static_step = self.make_static_step(capture=True) if train.cuda_graphs else None
        if checkpoint_dir is not None and (latest := latest_checkpoint(checkpoint_dir)) is not None:
            self.load_state(load_checkpoint(latest))
            self.resumed_from = latest

    # ------------------------------------------------------------------ the loop
    def train_step(self) -> PendingStep:
        """One training step: an optimiser step for each of the objective's phases, each on a fresh batch.

        Returns the step's losses, gradient norms and diagnostics as one tensor on the device (not synchronised).
        """
        if self.static_step is not None:
            return self._static_train_step()
        train = self.config.train
        factor = lr_factor(train.lr_schedule, self.step, train.num_steps)
        names: list[str] = []
        values: list[Tensor] = []
        self.objective.begin_step(self.step, train.num_steps)
        for phase in self.objective.phases(self.step):
            optimizer, parameters = self.optimizers[phase], self.trained_parameters[phase]
            for group in optimizer.param_groups:
                group["lr"] = self.base_lrs[phase] * factor
            x1 = self._batch(train.batch_size)
            with self._autocast():
                output = self.objective.loss(phase, self.train_model, x1, self.noise_generator)
            loss = output.loss.float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.world_size > 1:
                average_gradients(parameters, self.world_size)
            suffix = "" if phase == "model" else f"/{phase}"
            names.append("loss" + suffix)
            values.append(loss.detach())
            if train.grad_clip is not None:
                names.append("grad_norm" + suffix)
                # One global L2 norm over everything this optimiser trains (arXiv 2505.18825 clips at 10 and 1).
                values.append(torch.nn.utils.clip_grad_norm_(parameters, train.grad_clip))
            optimizer.step()
            self.objective.after_step(self.model, phase, self.step)
            # Named per phase like the losses, so a critic step's diagnostics do not overwrite the generator's.
            names.extend(name + suffix for name in output.diagnostics)
            values.extend(v.detach().float() for v in output.diagnostics.values())
        ema_start = self.objective.ema_start()
        if ema_start > 0 and self.step == ema_start:  # e.g. MGM's game begins: forget the warm-up's weights
            self.ema.restart(self.model)
        self.ema.update(self.model, self.step - ema_start if self.step >= ema_start else self.step)
        self.step += 1
        return PendingStep(self.step, names, values, self.base_lrs["model"] * factor)

    def _static_train_step(self) -> PendingStep:
        """`train_step` through `static_step`: one phase, the learning rate and EMA decays computed here on the host,
        the rest one graph replay on CUDA."""
        train = self.config.train
        lr = self.base_lrs["model"] * lr_factor(train.lr_schedule, self.step, train.num_steps)
        self.objective.begin_step(self.step, train.num_steps)
        values = self.static_step(self._batch(train.batch_size), lr, self.step)
        self.step += 1
        return PendingStep(self.step, self.static_step.names, list(values.unbind()), lr)

    def make_static_step(self, *, capture: bool) -> StaticStep:
        """The step of `train.cuda_graphs` over this trainer's model, optimiser, EMAs and noise; `capture=False` runs
        it uncaptured (how the CPU tests check it against `train_step`)."""
        if self.world_size > 1:
            raise ConfigError.single("train.cuda_graphs", "is for one worker: data-parallel ranks are not captured")
        return StaticStep(
            self.objective,
            self.model,
            self.optimizers["model"],
            self.trained_parameters["model"],
            self.ema,
            self.noise_generator,
            grad_clip=self.config.train.grad_clip,
            capture=capture,
        )

    def _placed(self, network: torch.nn.Module) -> torch.nn.Module:
        """`network` on the training device, in channels-last layout when `train.channels_last`."""
        network = network.to(self.device)
        return network.to(memory_format=torch.channels_last) if self.config.train.channels_last else network

    def _batch(self, n: int) -> Tensor:
        """(n, *shape) data on the device, from the data generator; the same values whichever path feeds it."""
        train = self.config.train
        if train.data_on_device:
            x1 = self.dataset.sample_on(n, self.data_generator, self.device)
        else:
            x1 = self.dataset.sample(n, self.data_generator).to(self.device, non_blocking=True)
        return x1.contiguous(memory_format=torch.channels_last) if train.channels_last else x1

    def _autocast(self) -> contextlib.AbstractContextManager:
        # A disabled torch.autocast still costs tens of microseconds a step: skip it for float32.
        if self.config.train.precision == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(self, should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Train to `train.num_steps`, evaluating every `eval.interval` steps and at the end.

        `should_stop` is polled after every step (e.g. a Ctrl-C flag): when it says so, the pending steps are
        reported, a checkpoint is written, and KeyboardInterrupt is raised at that clean point.
        """
        train, interval = self.config.train, self.config.eval.interval
        total = train.num_steps
        pending: list[PendingStep] = []
        # A progress bar only on a terminal: in logs and CI its carriage returns are noise (MLflow has the curve).
        show = self.progress and self.rank == 0 and sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.step, desc="train", disable=not show)
        started, start_step = time.perf_counter(), self.step
        while self.step < total:
            pending.append(self.train_step())
            step = self.step
            due_checkpoint = step % train.checkpoint_interval == 0 or step == total
            due_eval = interval > 0 and step % interval == 0 and step < total
            stopping = should_stop is not None and should_stop()
            if len(pending) >= train.log_interval or due_checkpoint or due_eval or stopping:
                bar.update(len(pending))
                diverged_at, self._last_loss = report_window(pending, self.reporter, started, start_step)
                pending = []
                if diverged_at is not None:
                    bar.close()
                    return TrainResult("diverged", diverged_at, checkpoint=self._latest())
                bar.set_postfix(loss=f"{self._last_loss:.4g}")
            if due_checkpoint or stopping:
                self.save()
            if stopping:
                bar.close()
                raise KeyboardInterrupt(f"stopped on request after step {step}")
            if due_eval:
                self.run_evaluation()
        bar.close()
        steps_per_s = (self.step - start_step) / max(time.perf_counter() - started, 1e-9)
        if self.last_evaluation is None or self.last_evaluation.step != self.step:
            self.run_evaluation()
        metrics = self.last_evaluation.metrics if self.last_evaluation else {}
        return TrainResult("finished", self.step, metrics, self._latest(), steps_per_s)

    # ------------------------------------------------------------------ evaluation and state
    def evaluation_model(self) -> torch.nn.Module:
        """The network evaluation uses: the configured EMA (or raw) weights, eval mode, a copy."""
        return self.ema.averaged_model(self.model, self.config.evaluated_ema())

    def run_evaluation(self) -> Evaluation | None:
        if self.rank != 0:
            self.reporter.report_peer_evaluation(self.step)
            return None
        model, config = self.evaluation_model(), self.config.eval
        evaluation = evaluate(model, self.objective, self.dataset, config, step=self.step, device=self.device)
        evaluation.metrics.update(self.areas.update(evaluation.step, evaluation.metrics))
        self.last_evaluation = evaluation
        self.reporter.report_evaluation(evaluation)
        return evaluation

    # What a checkpoint holds and how a resume loads it back, and what a finished run hands on (state.py).
    state_dict = trainer_state
    load_state = restore_state
    export = exported_state

    def save(self) -> Path | None:
        if self.rank != 0 or self.checkpoint_dir is None:
            return None
        path = save_checkpoint(self.checkpoint_dir, self.step, self.state_dict())
        self.reporter.report_checkpoint(self.step, path)
        return path

    def _latest(self) -> Path | None:
        return latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir is not None else None
