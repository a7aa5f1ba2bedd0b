"""Stochastic interpolants I(t) = alpha(t) x0 + beta(t) x1 + gamma(t) z (spec section 1).

Time convention, the one used everywhere: x0 ~ N(0, sigma0^2 I) is noise at t = 0, x1 is data at t = 1,
and samplers integrate from t = 0 towards t = 1. `tests/test_interpolants.py` pins it.

The schedule (alpha, beta) and the latent-noise term gamma are independent choices; every coefficient and its
time derivative is written in closed form, so no autograd runs through time at training time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from pydantic import Field
from torch import Tensor

from mgm_studies.configbase import StrictModel

Schedule = Literal["linear", "trig", "vp", "poly"]
GammaKind = Literal["none", "sqrt", "sin2"]


@dataclass(frozen=True)
class PathSample:
    """One draw of the interpolant at times t.

    t: (B,); x0 (noise), x1 (data), z (latent noise of the gamma term), xt = I(t) and dxt = dI/dt(t):
    each (B, *data_shape).
    """

    t: Tensor
    x0: Tensor
    x1: Tensor
    z: Tensor
    xt: Tensor
    dxt: Tensor


def _per_sample(coefficient: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) in x's dtype, so that it broadcasts against x of shape (B, *data_shape)."""
    return coefficient.to(x.dtype).view(-1, *[1] * (x.dim() - 1))


class Interpolant:
    """Coefficients alpha, beta, gamma of I(t) and their derivatives; each method maps t (B,) -> (B,).

    schedule: `linear` (1 - t, t), `trig` (cos(pi t / 2), sin(pi t / 2)), `vp` (beta = exp(-T(1 - t) / 2),
    alpha = sqrt(1 - beta^2), T(u) = b_min u + (b_max - b_min) u^2 / 2), `poly` (1 - t^n, t^n).
    gamma: `none` (0), `sqrt` (sqrt(a t (1 - t))), `sin2` (a sin(pi t)^2), with a = gamma_scale.
    """

    def __init__(
        self,
        schedule: Schedule = "linear",
        gamma: GammaKind = "none",
        *,
        gamma_scale: float = 1.0,
        poly_power: float = 2.0,
        vp_beta_min: float = 0.1,
        vp_beta_max: float = 20.0,
        sigma0: float = 1.0,
    ) -> None:
        if schedule not in get_args(Schedule):
            raise ValueError(f"schedule must be one of {get_args(Schedule)}, got {schedule!r}")
        if gamma not in get_args(GammaKind):
            raise ValueError(f"gamma must be one of {get_args(GammaKind)}, got {gamma!r}")
        if not gamma_scale >= 0:
            raise ValueError(f"gamma_scale must be >= 0, got {gamma_scale}")
        if not poly_power > 0:
            raise ValueError(f"poly_power must be > 0, got {poly_power}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        if not vp_beta_min > 0:
            raise ValueError(f"vp_beta_min must be > 0, got {vp_beta_min}")
        if not vp_beta_max >= vp_beta_min:
            raise ValueError(f"vp_beta_max must be >= vp_beta_min ({vp_beta_min}), got {vp_beta_max}")
        self.schedule: Schedule = schedule
        self.gamma_kind: GammaKind = gamma
        self.gamma_scale = float(gamma_scale)
        self.poly_power = float(poly_power)
        self.vp_beta_min = float(vp_beta_min)
        self.vp_beta_max = float(vp_beta_max)
        self.sigma0 = float(sigma0)
        # A zero scale switches the latent term off; treating it as `none` avoids 0 * inf at the ends of `sqrt`.
        self._gamma_active = gamma != "none" and self.gamma_scale > 0

    def __repr__(self) -> str:
        return (
            f"Interpolant(schedule={self.schedule!r}, gamma={self.gamma_kind!r}, gamma_scale={self.gamma_scale}, "
            f"poly_power={self.poly_power}, vp_beta_min={self.vp_beta_min}, vp_beta_max={self.vp_beta_max}, "
            f"sigma0={self.sigma0})"
        )

    def without_gamma(self) -> Interpolant:
        """The same schedule and noise scale with no gamma term: the deterministic path (MGM's denoiser trains on it;
        `InterpolantConfig.without_gamma` is its config-side twin)."""
        return Interpolant(
            self.schedule,
            poly_power=self.poly_power,
            vp_beta_min=self.vp_beta_min,
            vp_beta_max=self.vp_beta_max,
            sigma0=self.sigma0,
        )

    # ------------------------------------------------------------------ schedule
    def _vp_T(self, u: Tensor) -> Tensor:
        return self.vp_beta_min * u + 0.5 * (self.vp_beta_max - self.vp_beta_min) * u.square()

    def _vp_T_dot(self, u: Tensor) -> Tensor:
        return self.vp_beta_min + (self.vp_beta_max - self.vp_beta_min) * u

    def alpha(self, t: Tensor) -> Tensor:
        """Weight of the noise x0: 1 at t = 0 (vp: sqrt(1 - beta(0)^2), just below 1), 0 at t = 1."""
        if self.schedule == "linear":
            return 1 - t
        if self.schedule == "trig":
            # sin of the complementary angle: exact end values and alpha(t) == beta(1 - t) to the last bit.
            return torch.sin(0.5 * math.pi * (1 - t))
        if self.schedule == "vp":
            # 1 - beta^2 = -expm1(-T): no cancellation near t = 1, where beta -> 1.
            return torch.sqrt(-torch.expm1(-self._vp_T(1 - t)))
        return 1 - t.pow(self.poly_power)

    def beta(self, t: Tensor) -> Tensor:
        """Weight of the data x1: 0 at t = 0 (vp: exp(-T(1) / 2), about 0.0066 by default), 1 at t = 1."""
        if self.schedule == "linear":
            return t.clone()
        if self.schedule == "trig":
            return torch.sin(0.5 * math.pi * t)
        if self.schedule == "vp":
            return torch.exp(-0.5 * self._vp_T(1 - t))
        return t.pow(self.poly_power)

    def alpha_dot(self, t: Tensor) -> Tensor:
        """d alpha / dt; vp: -inf at t = 1 (alpha = sqrt(1 - beta^2) leaves 0 with infinite slope)."""
        if self.schedule == "linear":
            return torch.full_like(t, -1.0)
        if self.schedule == "trig":
            return -0.5 * math.pi * torch.cos(0.5 * math.pi * (1 - t))
        if self.schedule == "vp":
            return self._half_dsq_alpha(t) / self.alpha(t)
        return -self.poly_power * t.pow(self.poly_power - 1)

    def beta_dot(self, t: Tensor) -> Tensor:
        """d beta / dt."""
        if self.schedule == "linear":
            return torch.ones_like(t)
        if self.schedule == "trig":
            return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)
        if self.schedule == "vp":
            return 0.5 * self._vp_T_dot(1 - t) * self.beta(t)
        return self.poly_power * t.pow(self.poly_power - 1)

    def _half_dsq_alpha(self, t: Tensor) -> Tensor:
        """alpha alpha' = (d/dt alpha^2) / 2, finite where alpha' alone is not (vp at t = 1)."""
        if self.schedule == "vp":
            # alpha^2 = 1 - exp(-T(1 - t))  =>  d/dt alpha^2 = -exp(-T(1 - t)) T'(1 - t) = -beta^2 T'.
            return -0.5 * self._vp_T_dot(1 - t) * torch.exp(-self._vp_T(1 - t))
        return self.alpha(t) * self.alpha_dot(t)

    # ------------------------------------------------------------------ latent noise term
    def gamma(self, t: Tensor) -> Tensor:
        """Scale of the latent noise z; 0 at both ends."""
        if not self._gamma_active:
            return torch.zeros_like(t)
        a = self.gamma_scale
        if self.gamma_kind == "sqrt":
            return torch.sqrt(a * (t * (1 - t)).clamp_min(0))
        return a * torch.sin(math.pi * t).square()

    def gamma_dot(self, t: Tensor) -> Tensor:
        """d gamma / dt; `sqrt`: +inf at t = 0 and -inf at t = 1."""
        if not self._gamma_active:
            return torch.zeros_like(t)
        a = self.gamma_scale
        if self.gamma_kind == "sqrt":
            return math.sqrt(a) * (1 - 2 * t) / (2 * torch.sqrt((t * (1 - t)).clamp_min(0)))
        return a * math.pi * torch.sin(2 * math.pi * t)

    def _half_dsq_gamma(self, t: Tensor) -> Tensor:
        """gamma gamma' = (d/dt gamma^2) / 2, finite at the ends for `sqrt` (gamma^2 = a t (1 - t))."""
        if not self._gamma_active:
            return torch.zeros_like(t)
        if self.gamma_kind == "sqrt":
            return 0.5 * self.gamma_scale * (1 - 2 * t)
        return self.gamma(t) * self.gamma_dot(t)

    # ------------------------------------------------------------------ properties
    @property
    def symmetric(self) -> bool:
        """alpha(t) == beta(1 - t) and gamma(t) == gamma(1 - t): what MGM's midpoint argument needs (spec 5).

        Every gamma kind is symmetric, so this is a property of the schedule alone.
        """
        return self.schedule in ("linear", "trig") or (self.schedule == "poly" and self.poly_power == 1.0)

    @property
    def condot(self) -> bool:
        """The CondOT path x_t = (1 - t) x0 + t x1, x0 ~ N(0, I), no gamma: what generator matching needs (spec 6)."""
        return self.schedule == "linear" and self.gamma_kind == "none" and self.sigma0 == 1.0

    @property
    def singular_ends(self) -> tuple[bool, bool]:
        """(some coefficient's derivative blows up at t = 0, ... at t = 1): sample t away from such an end."""
        sqrt_gamma = self._gamma_active and self.gamma_kind == "sqrt"
        poly_at_zero = self.schedule == "poly" and self.poly_power < 1  # n t^(n - 1) -> inf
        return (sqrt_gamma or poly_at_zero, sqrt_gamma or self.schedule == "vp")

    # ------------------------------------------------------------------ draws
    def noise(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | None = None) -> Tensor:
        """x0 ~ N(0, sigma0^2 I) of `shape`, drawn on the generator's device and then moved to `device`."""
        x0 = torch.randn(shape, generator=generator, device=generator.device)
        return self.sigma0 * (x0 if device is None else x0.to(device))

    def sample(self, x0: Tensor, x1: Tensor, z: Tensor, t: Tensor) -> PathSample:
        """I(t) and dI/dt(t) for x0, x1, z of shape (B, *data_shape) and t of shape (B,)."""
        a, b, g = (_per_sample(c, x1) for c in (self.alpha(t), self.beta(t), self.gamma(t)))
        da, db, dg = (_per_sample(c, x1) for c in (self.alpha_dot(t), self.beta_dot(t), self.gamma_dot(t)))
        xt = a * x0 + b * x1
        dxt = da * x0 + db * x1
        if self._gamma_active:  # keeps dxt finite at the ends of `sqrt` when there is no latent term
            xt = xt + g * z
            dxt = dxt + dg * z
        return PathSample(t=t, x0=x0, x1=x1, z=z, xt=xt, dxt=dxt)

    # ------------------------------------------------------------------ Gaussian closed forms (tests, benchmarks)
    def marginal_variance_gaussian(self, t: Tensor, sd: float) -> Tensor:
        """var_t = alpha^2 sigma0^2 + beta^2 sd^2 + gamma^2, the per-dimension variance of I(t) for data N(m, sd^2 I).

        t: (B,) -> (B,).
        """
        return self.alpha(t).square() * self.sigma0**2 + self.beta(t).square() * sd**2 + self.gamma(t).square()

    def _cross_covariance_gaussian(self, t: Tensor, sd: float) -> Tensor:
        """Cov(dI, I_t) per dimension: alpha' alpha sigma0^2 + beta' beta sd^2 + gamma' gamma, (B,)."""
        return (
            self._half_dsq_alpha(t) * self.sigma0**2 + self.beta(t) * self.beta_dot(t) * sd**2 + self._half_dsq_gamma(t)
        )

    def velocity_gaussian(self, t: Tensor, x: Tensor, mean: Tensor, sd: float) -> Tensor:
        """Exact marginal velocity b(t, x) = E[dI(t) | I(t) = x] for data N(mean, sd^2 I).

        (dI, I_t) are jointly Gaussian, so the conditional mean is linear in x:
        b = beta' m + Cov(dI, I_t) / var_t * (x - beta m).
        t: (B,); x: (B, *data_shape); mean: broadcastable to data_shape. Returns (B, *data_shape).
        """
        mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
        gain = self._cross_covariance_gaussian(t, sd) / self.marginal_variance_gaussian(t, sd)
        return _per_sample(self.beta_dot(t), x) * mean + _per_sample(gain, x) * (
            x - _per_sample(self.beta(t), x) * mean
        )

    def conditional_variance_gaussian(self, t: Tensor, dim: int, sd: float) -> Tensor:
        """E || dI(t) - b(t, I(t)) ||^2 over `dim` dimensions for data N(m, sd^2 I): the irreducible `si` loss at t.

        dim * (Var dI - Cov(dI, I_t)^2 / var_t). t: (B,) -> (B,); +inf where a derivative is infinite.
        """
        var_dot = self.alpha_dot(t).square() * self.sigma0**2 + self.beta_dot(t).square() * sd**2
        var_dot = var_dot + self.gamma_dot(t).square()
        explained = self._cross_covariance_gaussian(t, sd).square() / self.marginal_variance_gaussian(t, sd)
        # Cauchy-Schwarz makes the difference >= 0; the clamp only removes rounding below zero.
        return dim * (var_dot - explained).clamp_min(0)


class InterpolantConfig(StrictModel):
    """The run config's `interpolant:` section, the arguments of `Interpolant` (spec section 1)."""

    schedule: Schedule = "linear"
    gamma: GammaKind = "none"
    gamma_scale: float = Field(1.0, gt=0.0)
    poly_power: float = Field(2.0, gt=0.0)
    vp_beta_min: float = Field(0.1, gt=0.0)
    vp_beta_max: float = Field(20.0, gt=0.0)
    sigma0: float = Field(1.0, gt=0.0)

    def without_gamma(self) -> InterpolantConfig:
        """The deterministic path under this interpolant (gamma none): what MGM's denoiser and its teacher train on."""
        return self.model_copy(update={"gamma": "none"})

    def path_key(self) -> dict:
        """The fields that define the path: gamma_scale only matters with a gamma."""
        key = self.model_dump()
        if self.gamma == "none":
            key.pop("gamma_scale")
        return key

    def build(self) -> Interpolant:
        return Interpolant(**self.model_dump())
