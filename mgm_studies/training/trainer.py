"""The shared Trainer: build, loop, evaluate, checkpoint, resume. It never imports Ray or MLflow.

One step: objective -> loss -> backward -> grad clip -> optimiser -> every EMA. Per-step losses stay on the
device and are checked and reported every `log_interval` steps (and before every evaluation or checkpoint), so the
hot loop holds no host sync; a non-finite loss or gradient norm ends the run as "diverged" at the exact step where it
first appeared, and no checkpoint is ever written after it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mgm_studies.builders import build_model, build_run
from mgm_studies.config import RunConfig
from mgm_studies.data import VectorDataset
from mgm_studies.evaluation import evaluate
from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives import Objective
from mgm_studies.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mgm_studies.training.ema import EMA
from mgm_studies.training.reporter import Evaluation, NullReporter, Reporter
from mgm_studies.training.schedule import lr_factor

Status = Literal["finished", "diverged"]


@dataclass
class TrainResult:
    status: Status
    step: int  # the last step done; for "diverged", the step whose loss or gradient was not finite
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation
    checkpoint: Path | None = None  # the newest resumable checkpoint
    steps_per_s: float = 0.0


@dataclass
class _Pending:
    step: int
    loss: Tensor
    grad_norm: Tensor | None
    lr: float
    diagnostics: dict[str, Tensor]


class Trainer:
    """Trains `config` on `device`. Resumes from the newest checkpoint in `checkpoint_dir` when there is one.

    `parts` (from `build_run(config)`) saves building the data twice when the caller already validated it.
    Ray executors construct it inside a trial or a Train worker with their own `reporter`, `rank` and
    `world_size`; only rank 0 evaluates and writes checkpoints.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        checkpoint_dir: Path | None = None,
        reporter: Reporter | None = None,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        progress: bool = False,
        parts: tuple[VectorDataset, Interpolant, Objective] | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_dir = checkpoint_dir
        self.reporter = reporter or NullReporter()
        self.rank, self.world_size = rank, world_size
        self.progress = progress
        self.dataset, self.interpolant, self.objective = parts or build_run(config)
        train = config.train
        with torch.random.fork_rng(devices=[]):  # initialise from the seed without touching the caller's RNG
            torch.manual_seed(train.seed)
            self.model = build_model(config.model, self.dataset.dim, self.objective.model_kind).to(self.device)
        optimizer_class = torch.optim.AdamW if train.optimizer.name == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class(
            self.model.parameters(),
            lr=train.optimizer.lr,
            betas=train.optimizer.betas,
            eps=train.optimizer.eps,
            weight_decay=train.optimizer.weight_decay,
        )
        self.ema = EMA(self.model, train.ema_decays, warmup=train.ema_warmup)
        # Data on the CPU, noise on the device: two generators, both checkpointed.
        self.data_generator = torch.Generator().manual_seed(train.seed * 1_000_003 + rank)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(train.seed * 1_000_003 + 7919 + rank)
        self.step = 0
        self.last_evaluation: Evaluation | None = None
        self.resumed_from: Path | None = None
        self._last_loss = float("nan")
        if checkpoint_dir is not None and (latest := latest_checkpoint(checkpoint_dir)) is not None:
            self.load_state(load_checkpoint(latest))
            self.resumed_from = latest

    # ------------------------------------------------------------------ the loop
    def train_step(self) -> _Pending:
        """One optimiser step on a fresh batch; returns its loss (on the device, not synchronised)."""
        train = self.config.train
        lr = train.optimizer.lr * lr_factor(train.lr_schedule, self.step, train.num_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x1 = self.dataset.sample(train.batch_size, self.data_generator).to(self.device, non_blocking=True)
        with self._autocast():
            output = self.objective(self.model, x1, self.noise_generator)
        loss = output.loss.float().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if train.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return _Pending(self.step, loss.detach(), grad_norm, lr, output.diagnostics)

    def _autocast(self) -> contextlib.AbstractContextManager:
        # A disabled torch.autocast still costs tens of microseconds a step: skip it for float32.
        if self.config.train.precision == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(self) -> TrainResult:
        """Train to `train.num_steps`, evaluating every `eval.interval` steps and at the end."""
        train, interval = self.config.train, self.config.eval.interval
        total = train.num_steps
        pending: list[_Pending] = []
        # A progress bar only on a terminal: in logs and CI its carriage returns are noise (MLflow has the curve).
        show = self.progress and self.rank == 0 and sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.step, desc="train", disable=not show)
        started, start_step = time.perf_counter(), self.step
        while self.step < total:
            pending.append(self.train_step())
            step = self.step
            due_checkpoint = step % train.checkpoint_interval == 0 or step == total
            due_eval = interval > 0 and step % interval == 0 and step < total
            if len(pending) >= train.log_interval or due_checkpoint or due_eval:
                bar.update(len(pending))
                diverged_at = self._flush(pending, started, start_step)
                pending = []
                if diverged_at is not None:
                    bar.close()
                    return TrainResult("diverged", diverged_at, checkpoint=self._latest())
                bar.set_postfix(loss=f"{self._last_loss:.4g}")
            if due_checkpoint:
                self.save()
            if due_eval:
                self.run_evaluation()
        bar.close()
        steps_per_s = (self.step - start_step) / max(time.perf_counter() - started, 1e-9)
        if self.last_evaluation is None or self.last_evaluation.step != self.step:
            self.run_evaluation()
        metrics = self.last_evaluation.metrics if self.last_evaluation else {}
        return TrainResult("finished", self.step, metrics, self._latest(), steps_per_s)

    def _flush(self, pending: list[_Pending], started: float, start_step: int) -> int | None:
        """Report the pending steps; return the first step whose loss or gradient is not finite, else None."""
        losses_t = torch.stack([p.loss for p in pending]).cpu()
        finite = torch.isfinite(losses_t)
        norms: list[float] = []
        if pending[0].grad_norm is not None:
            norms_t = torch.stack([p.grad_norm for p in pending]).float().cpu()
            finite &= torch.isfinite(norms_t)
            norms = norms_t.tolist()
        losses, finite_list = losses_t.tolist(), finite.tolist()
        for i, p in enumerate(pending):
            if not finite_list[i]:
                return p.step
            scalars = {"loss": losses[i], "lr": p.lr, **{k: v.item() for k, v in p.diagnostics.items()}}
            if norms:
                scalars["grad_norm"] = norms[i]
            if i == len(pending) - 1:
                scalars["train/steps_per_s"] = (p.step - start_step) / max(time.perf_counter() - started, 1e-9)
            self.reporter.report_scalars(p.step, scalars)
        self._last_loss = losses[-1]
        return None

    # ------------------------------------------------------------------ evaluation and state
    def evaluation_model(self) -> torch.nn.Module:
        """The network evaluation uses: the configured EMA (or raw) weights, eval mode, a copy."""
        return self.ema.averaged_model(self.model, self.config.evaluated_ema())

    def run_evaluation(self) -> Evaluation | None:
        if self.rank != 0:
            return None
        evaluation = evaluate(
            self.evaluation_model(),
            self.objective,
            self.dataset,
            self.config.eval,
            step=self.step,
            device=self.device,
        )
        self.last_evaluation = evaluation
        self.reporter.report_evaluation(evaluation)
        return evaluation

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs to continue bit-for-bit: weights, EMAs, optimiser, step, RNG states."""
        return {
            "config_hash": self.config.config_hash(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_generator": self.data_generator.get_state(),
            "noise_generator": self.noise_generator.get_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state["config_hash"] != self.config.config_hash():
            raise RuntimeError(
                f"checkpoint was written by config {state['config_hash']}, this run's config is "
                f"{self.config.config_hash()}: resume with the config the run started with"
            )
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_generator.set_state(state["data_generator"])
        self.noise_generator.set_state(state["noise_generator"])
        self.step = int(state["step"])

    def save(self) -> Path | None:
        if self.rank != 0 or self.checkpoint_dir is None:
            return None
        path = save_checkpoint(self.checkpoint_dir, self.step, self.state_dict())
        self.reporter.report_checkpoint(self.step, path)
        return path

    def _latest(self) -> Path | None:
        return latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir is not None else None

    def export(self) -> dict[str, Any]:
        """The model a finished run hands on (sampling, evaluation, teachers): config, raw and EMA weights."""
        return {
            "config": self.config.model_dump_json(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
        }
