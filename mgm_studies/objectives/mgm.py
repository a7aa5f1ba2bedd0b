"""Midpoint generative models `mgm` (spec section 5; arXiv 2605.29920): a one-step generator G(z) trained
against a critic f(y, t) that estimates the midpoint divergence.

Draw t in [t_min, t_max] (inside (0, 1/2]), a hidden flip B ~ Bernoulli(p_flip), x_d ~ data, x_g = G(z), eps;
t' = 1 - t if B else t. The critic sees the observation Y = alpha(t') x_g + beta(t') x_d + gamma(t') eps and t, never
B or t', and regresses the displacement D = x_d - x_g (never flipped). Its optimum is E[D | Y, t], and
D_pi(p, q) = E || E[D | Y, t] ||^2 = sup_f E[2 <f, D> - ||f||^2] is zero iff p = q when p_flip = 1/2, because a
symmetric interpolant (alpha(t) = beta(1 - t)) makes swapping x_d and x_g the same as flipping t, which flips D.
`sg[.]` below is stop-gradient. (Long: one objective with two networks, three phases, a warm-up and their config.)

The paper's recipe, `denoiser_steps` W > 0: a denoising warm-up, then both networks start from the denoiser.
- Steps 0..W-1 (phase "denoise", its own optimiser at train.optimizer.lr) train a velocity network v(t, x) with the
  `si` loss on the schedule without gamma, x_t = alpha x0 + beta x1, v = alpha' x0 + beta' x1.
- The generator is the data prediction of that path at t_g (`generator_time`, default 0), kept as a network:
  solving the two equations for x1, D(x, t) = (alpha' x - alpha v(t, x)) / (alpha' beta - alpha beta'), which is
  x + (1 - t) v(t, x) on the linear path. G(z) = D(z, t_g) (`models/denoising_generator.py`); at t_g = 0 the input
  z ~ N(0, sigma0^2 I) is exactly the path's x0, the denoiser at its highest noise level as in the paper.
- At step W the critic becomes a copy of v: f(t, y) = v(t, y), with the critic's time taken as the path's time.
  An unflipped observation is the path at t between x0 = x_g and x1 = x_d, so when x_g has the path's x0 law,
  v(t, Y) = E[x_d - x_g | Y, unflipped]: the critic starts at the regression target of one branch, pointing the way
  a denoiser points, and learns the flipped branch in the game.
- The generator's EMAs restart at step W (`ema_start`): they average the game, not the denoiser.
Instead of the warm-up, `teacher` (a finished si run on this path without gamma, with the run's model config) gives
the denoiser's weights: generator and critic start from them at step 0.

The critic: a velocity network (the model's architecture with a start from a denoiser, else `critic_hidden` x
`critic_depth`), plus with `critic_features` > 0 a branch on random Fourier features of Y whose output is added and
starts at zero (`models/critic.py`): the flip makes the critic resolve the data's density ratio at its finest scale,
which an MLP on raw coordinates learns slowly (spectral bias).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn
from torch.func import functional_call

from mgm_studies.configbase import StrictModel
from mgm_studies.interpolants import Interpolant
from mgm_studies.models.critic import FourierFeatureBranch, FourierFeatureCritic
from mgm_studies.models.mlp import VelocityMLP
from mgm_studies.objectives.base import DenoisingGeneratorKind, Objective, ObjectiveOutput, per_sample, squared_norm
from mgm_studies.objectives.si import SIConfig, StochasticInterpolantObjective
from mgm_studies.objectives.teacher_config import TeacherConfig
from mgm_studies.sampling import SampleResult, VelocityFn

_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class MGMConfig(StrictModel):
    name: Literal["mgm"] = "mgm"
    flip_probability: float = Field(0.5, ge=0.0, le=1.0, description="p_flip; only 1/2 keeps 'zero iff p = q'")
    t_min: float = Field(0.05, gt=0.0, le=0.5, description="lower end of the time law, in (0, 1/2]")
    t_max: float = Field(0.5, gt=0.0, le=0.5, description="upper end of the time law, in [t_min, 1/2]")
    rho: float = Field(1.0, gt=0.0, description="time law power: t = (U (hi - lo) + lo)^rho on the 1/rho scale")
    sigma_max: float = Field(0.0, description="removed (only 0 validates): the noise is the interpolant's gamma")
    gen_grad: Literal["full", "stopped"] = "full"
    critic_steps: int = Field(1, ge=1, description="critic optimiser steps per generator step")
    warmup_steps: int = Field(0, ge=0, description="critic-only training steps before the first generator step")
    critic_lr: float | None = Field(None, gt=0.0, description="None: train.optimizer.lr")
    generator_lr: float | None = Field(
        None, gt=0.0, description="the generator's in the game; None: train.optimizer.lr (which the warm-up uses)"
    )
    adam_betas: tuple[_Beta, _Beta] | None = Field(
        (0.0, 0.99), description="the game's Adam betas (generator and critic); None: train's"
    )
    critic_adam_betas: tuple[_Beta, _Beta] | None = Field(None, description="the critic's own; None: adam_betas")
    critic_hidden: int = Field(256, ge=1, description="vectors without a denoising warm-up")
    critic_depth: int = Field(4, ge=1, description="vectors without a denoising warm-up")
    critic_features: int = Field(
        0,
        ge=0,
        description="vectors: random Fourier features of the critic's input, a branch added to the critic "
        "(models/critic.py); 0: none",
    )
    critic_feature_scale: float = Field(1.0, gt=0.0, description="their frequencies' std, cycles per data unit")
    critic_feature_depth: int = Field(2, ge=1, description="depth of their branch (width critic_hidden)")
    denoiser_steps: int = Field(
        0,
        ge=0,
        description="the paper's denoising warm-up: the first denoiser_steps training steps (counted in train.steps) "
        "train the generator's velocity network with the si loss; then the critic starts as a copy of it",
    )
    collapse_check_steps: int = Field(
        200, ge=0, description="at each evaluation, steps of a fresh critic fitted to check the trained one; 0: off"
    )
    teacher: TeacherConfig | None = Field(
        None,
        description="instead of the warm-up: start generator and critic from a finished si run's weights (its EMA by "
        "default), on this interpolant without gamma and with the run's model config",
    )
    generator_time: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="with a warm-up, G(z) is the denoiser's data prediction at this time (0: noise)",
    )

    @field_validator("sigma_max")
    @classmethod
    def _noise_lives_in_the_interpolant(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError(
                f"the observation noise is the interpolant's gamma term now (one source of truth, so that a sweep over "
                f"interpolant.gamma reaches MGM): remove objective.sigma_max and write interpolant: {{gamma: sqrt, "
                f"gamma_scale: {value}}} for gamma(t)^2 = {value} t (1 - t)"
            )
        return value

    @model_validator(mode="after")
    def _ordered_times(self) -> MGMConfig:
        if self.t_min > self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must be <= t_max ({self.t_max})")
        if self.teacher is not None and self.denoiser_steps > 0:
            raise ValueError(
                "teacher and denoiser_steps both start the game from a denoiser: give one (a teacher replaces the "
                "warm-up; set denoiser_steps: 0)"
            )
        return self

    @property
    def starts_from_denoiser(self) -> bool:
        """The generator is a denoiser's data prediction: trained in the warm-up, or loaded from a teacher."""
        return self.denoiser_steps > 0 or self.teacher is not None


@dataclass(frozen=True)
class MidpointDraw:
    """One draw of the MGM observation. t: (B,), the time the critic sees (in [t_min, t_max], never t'); y: the
    observation Y; displacement: D = x_d - x_g. y and displacement: (B, *data_shape)."""

    t: Tensor
    y: Tensor
    displacement: Tensor


class MidpointGenerativeModel(Objective):
    """Generator phase "model", critic phase "critic"; per-sample losses (B,) summed over data dimensions.

    With `denoiser_steps` a phase "denoise" comes first (the warm-up: the module docstring). The critic (a velocity
    network, called as f(t, Y)) is built by `attach` and owned here; the trainer gives it its own optimiser through
    `networks`. Logs `mgm/divergence` = mean ||f(Y, t)||^2, the critic's divergence estimate.
    """

    name = "mgm"
    model_kind = "generator"  # without a warm-up; an instance with one sets its own (`_model_kind`)
    needs_symmetric_interpolant = True
    teacher_gives_weights = True  # objective.teacher: generator and critic start from its weights
    # What a study may optimise beside `loss` and the evaluation's metrics (a sweep logs them from a trial's results).
    reported_metrics: ClassVar[tuple[str, ...]] = ("mgm/divergence",)

    def __init__(self, config: MGMConfig, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        super().__init__(interpolant, teacher)  # refuses a non-symmetric interpolant (needs_symmetric_interpolant)
        self.config = config
        self.critic: nn.Module | None = None
        self.denoiser: nn.Module | None = None  # the generator's velocity network, with a warm-up
        self.generator: nn.Module | None = None  # the trained generator, set by attach
        self._critic_trained = False  # a critic step since the game began (after_step), for the collapse check
        # The warm-up trains on the schedule's deterministic path (no gamma): its data prediction is then exact.
        self._denoising = StochasticInterpolantObjective(SIConfig(), interpolant.without_gamma())
        self.model_kind = self._model_kind()

    def _model_kind(self) -> Literal["generator"] | DenoisingGeneratorKind:
        """`generator` (G(z), no time input), or from a denoiser G(z) = D(z, t_g) (the module docstring)."""
        if not self.config.starts_from_denoiser:
            return "generator"
        path, t = self._denoising.interpolant, torch.tensor([self.config.generator_time], dtype=torch.float64)
        a, b, da, db = (float(c(t)) for c in (path.alpha, path.beta, path.alpha_dot, path.beta_dot))
        det = da * b - a * db
        return DenoisingGeneratorKind(time=self.config.generator_time, scale_x=da / det, scale_v=-a / det)

    def attach(self, model: nn.Module, shape: int | tuple[int, ...], build=None) -> None:
        """Build the critic f(t, y) on `model`'s device and in its dtype: from a denoiser, a velocity network of the
        run's model config (a copy of `model.velocity` once the game starts); otherwise `critic_hidden` x
        `critic_depth` for vectors, the run's model config (`build`) for images."""
        reference = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0))
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.generator = model  # the raw weights the critic trains against (evaluation may see an EMA)
        if self.config.starts_from_denoiser:  # the critic starts as a copy of the denoiser: the same architecture
            if self.config.teacher is not None:  # `build_run` loaded and checked it (si, this path, this model)
                if not isinstance(self.teacher, nn.Module):
                    raise RuntimeError("mgm's teacher is loaded by build_run (objective.teacher); none was given")
                model.velocity.load_state_dict(self.teacher.state_dict())
            else:
                self.denoiser = model.velocity
            critic = build("velocity") if build is not None else copy.deepcopy(model.velocity)
        elif len(shape) == 1:
            critic = VelocityMLP(shape[0], hidden=self.config.critic_hidden, depth=self.config.critic_depth)
        elif build is not None:
            critic = build("velocity")
        else:
            raise ValueError(f"mgm's critic for samples of shape {shape} is built by `build`; none was given")
        if self.config.critic_features > 0:
            if len(shape) != 1:
                raise ValueError(f"objective.critic_features is for vectors; samples here have shape {shape}")
            branch = FourierFeatureBranch(
                shape[0],
                features=self.config.critic_features,
                scale=self.config.critic_feature_scale,
                hidden=self.config.critic_hidden,
                depth=self.config.critic_feature_depth,
            )
            critic = FourierFeatureCritic(critic, branch)
        self.critic = critic.to(device=reference.device, dtype=reference.dtype)
        if self.config.teacher is not None:  # no warm-up: the critic is the teacher's copy from the first step
            self._start_critic_from(model.velocity)

    def networks(self) -> dict[str, nn.Module]:
        """The critic; with a warm-up also "denoise", the generator's velocity network under its own optimiser (the
        warm-up's Adam state and learning rate are not the game's)."""
        return {"critic": self._critic(), **({"denoise": self.denoiser} if self.denoiser is not None else {})}

    def optimizer_options(self, phase: str) -> dict[str, Any]:
        if phase == "denoise":  # plain si training, as the si baseline trains: train.optimizer as it is
            return {}
        # Adam betas (0, 0.99) on both optimisers, as in the reference code; the critic may have its own.
        betas = self.config.adam_betas
        if phase == "critic" and self.config.critic_adam_betas is not None:
            betas = self.config.critic_adam_betas
        options: dict[str, Any] = {} if betas is None else {"betas": betas}
        lr = self.config.critic_lr if phase == "critic" else self.config.generator_lr
        return options if lr is None else {**options, "lr": lr}

    def begin_step(self, step: int, total_steps: int) -> None:
        """At the end of the warm-up the critic becomes a copy of the denoiser: f(t, y) = v(t, y), which points from
        the path's x0 side (the generator's) towards the data, the displacement's direction on the unflipped branch."""
        if self.denoiser is not None and step == self.config.denoiser_steps:
            self._start_critic_from(self.denoiser)

    def _start_critic_from(self, denoiser: nn.Module) -> None:
        """f(t, y) = v(t, y): the critic (its base, with Fourier features, whose branch starts at zero) copies v."""
        critic = self._critic()
        base = critic.base if isinstance(critic, FourierFeatureCritic) else critic
        base.load_state_dict(denoiser.state_dict())

    def ema_start(self) -> int:
        """The generator's EMAs average the game only: the warm-up's weights are a denoiser's, whose one-step output is
        the data's conditional mean, not a sample (at decay 0.999 they would still weigh 13% after 2000 game steps)."""
        return self.config.denoiser_steps

    def phases(self, step: int) -> tuple[str, ...]:
        step -= self.config.denoiser_steps
        if step < 0:
            return ("denoise",)
        if step < self.config.warmup_steps:
            return ("critic",)
        return ("critic",) * self.config.critic_steps + ("model",)

    def loss(self, phase: str, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        if phase == "denoise":  # only with a warm-up, whose `attach` set the denoiser
            return self._denoising(self.denoiser, x1, generator)
        if phase == "critic":
            return self.critic_loss(model, x1, generator)
        if phase == "model":
            return self.generator_loss(model, x1, generator)
        raise ValueError(f"objective 'mgm' has no phase {phase!r} (known: 'denoise', 'critic', 'model')")

    def __call__(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        """The generator loss (phase "model")."""
        return self.generator_loss(model, x1, generator)

    def sample_times(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """t = (U (hi - lo) + lo)^rho with hi = t_max^(1/rho), lo = t_min^(1/rho): (n,), inside [t_min, t_max]."""
        rho = self.config.rho
        lo, hi = self.config.t_min ** (1 / rho), self.config.t_max ** (1 / rho)
        u = torch.rand(n, generator=generator, device=device)
        return (lo + (hi - lo) * u).pow(rho)

    def observe(self, x_data: Tensor, x_gen: Tensor, generator: torch.Generator) -> MidpointDraw:
        """Steps 1-3 of spec section 5 for paired batches x_data, x_gen of shape (B, *data_shape)."""
        n, device = x_data.shape[0], x_data.device
        t = self.sample_times(n, generator, device)
        flipped = torch.rand(n, generator=generator, device=device) < self.config.flip_probability
        t_obs = torch.where(flipped, 1 - t, t)
        eps = torch.randn(x_data.shape, generator=generator, device=device)
        # The interpolant's own gamma (every kind is symmetric: gamma(t') = gamma(t), so it reveals nothing of B);
        # `sqrt` with scale a is the reference code's gamma(t)^2 = a t (1 - t).
        path = self.interpolant
        a, b, g = (per_sample(c(t_obs).to(x_data.dtype), x_data) for c in (path.alpha, path.beta, path.gamma))
        y = a * x_gen + b * x_data + g * eps
        return MidpointDraw(t=t.to(x_data.dtype), y=y, displacement=x_data - x_gen)

    def _generate(self, model: nn.Module, x1: Tensor, generator: torch.Generator, *, grad: bool) -> Tensor:
        """x_g = G(z), z ~ N(0, sigma0^2 I): the law `sample` receives its x0 from. (B, *data_shape)."""
        z = self.interpolant.noise(tuple(x1.shape), generator, device=x1.device).to(x1.dtype)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return model(z)

    def critic_loss(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        """||f(Y, t) - D||^2 with G(z) detached: its minimiser is f = E[D | Y, t]."""
        critic = self._critic()
        draw = self.observe(x1, self._generate(model, x1, generator, grad=False), generator)
        f = critic(draw.t, draw.y)
        loss = squared_norm(f - draw.displacement)
        return ObjectiveOutput(loss=loss, diagnostics=self._diagnostics(f))

    def generator_loss(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        """full: 2 <f(Y, t), D> - ||f(Y, t)||^2 through D and Y; stopped: -2 <G(z), sg[f(Y, t)]>, Y from sg[G(z)].

        The critic's parameters are frozen (passed detached), so no gradient reaches them; the graph runs through
        its input Y. Never 'maximise the critic's error': that drops the ||f||^2 term (spec section 5).
        """
        critic = self._critic()
        if self.config.gen_grad == "full":
            draw = self.observe(x1, self._generate(model, x1, generator, grad=True), generator)
            frozen = {name: p.detach() for name, p in critic.named_parameters()}
            f = functional_call(critic, frozen, (draw.t, draw.y))
            loss = (2 * f * draw.displacement - f.square()).flatten(1).sum(dim=1)
        else:
            x_gen = self._generate(model, x1, generator, grad=True)
            draw = self.observe(x1, x_gen.detach(), generator)
            with torch.no_grad():
                f = critic(draw.t, draw.y)
            loss = -2 * (x_gen * f).flatten(1).sum(dim=1)
        return ObjectiveOutput(loss=loss, diagnostics=self._diagnostics(f))

    def sample(self, model: nn.Module, x0: Tensor, num_steps: int) -> SampleResult:
        """x = G(x0): a one-step generator, NFE = 1 whatever `num_steps` is (every K gives the same samples)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        with torch.no_grad():
            return SampleResult(x=model(x0), nfe=1)

    def evaluation_checks(
        self, model: nn.Module, dataset: Any, generator: torch.Generator, device: torch.device
    ) -> tuple[dict[str, float], dict[str, str]]:
        """The collapse detector (`mgm_checks.collapse_check`), once the game has begun: against the raw generator the
        critic trains against, not the evaluated EMA `model`, whose law the critic never saw."""
        from mgm_studies.objectives.mgm_checks import collapse_check

        if not self._critic_trained:
            return {}, {}  # the critic has not been trained in this game yet: nothing to check
        trained = self.generator if self.generator is not None else model
        return collapse_check(self, trained, dataset, generator, device, self.config.collapse_check_steps)

    def after_step(self, model: nn.Module, phase: str, step: int) -> None:
        if phase == "critic":
            self._critic_trained = True

    def _critic(self) -> nn.Module:
        if self.critic is None:
            raise RuntimeError("mgm's critic is built by attach(model, dim); call it before training")
        return self.critic

    @staticmethod
    def _diagnostics(f: Tensor) -> dict[str, Tensor]:
        return {"mgm/divergence": squared_norm(f.detach()).mean()}
