"""MLPs for vector data: a velocity field v(t, x) and a two-time average velocity u(s, t, x) (spec sections 2, 3).

Both use out-of-place operations only, so that `torch.func.jvp` (forward-mode AD) runs through them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mgm_studies.configbase import PositiveInt, StrictModel
from mgm_studies.models.embeddings import EmbeddingDim, TimeEmbeddingKind, make_time_embedding

Activation = Literal["silu", "gelu", "relu"]
TimePair = Literal["s_gap", "s_t"]


class MLPConfig(StrictModel):
    """The MLPs below, for vector data; the default model (`name` may be left out)."""

    name: Literal["mlp"] = "mlp"
    hidden: PositiveInt = 256
    depth: PositiveInt = 4
    time_embedding: TimeEmbeddingKind = "sinusoidal"
    embedding_dim: EmbeddingDim = 64
    activation: Activation = "silu"
    time_pair: TimePair = Field("s_gap", description="two-time models: embed (s, t - s) or (s, t)")

    def build(self, shape: tuple[int, ...], kind: str, heads: int = 1) -> nn.Module:
        """The MLP of `kind` (`velocity` with `heads` outputs, `two_time`, `generator`) for samples of shape (d,)."""
        options = self.model_dump(exclude={"name", "time_pair"})
        if kind == "velocity":
            return VelocityMLP(shape[0], **options, heads=heads)
        if kind == "two_time":
            return TwoTimeMLP(shape[0], **options, time_pair=self.time_pair)
        if kind == "generator":  # a one-step generator G(z) has no time input
            return GeneratorMLP(shape[0], hidden=self.hidden, depth=self.depth, activation=self.activation)
        raise ValueError(f"no model for kind {kind!r}")


_ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


def _check_sizes(dim: int, hidden: int, depth: int, activation: str, embedding_dim: int | None = None) -> None:
    for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if embedding_dim is not None and (embedding_dim < 2 or embedding_dim % 2):
        raise ValueError(f"embedding_dim must be even and >= 2, got {embedding_dim}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")


def _batch_times(t: Tensor | float, x: Tensor) -> Tensor:
    """A time given per sample (B,) or as a scalar, as a (B,) tensor in x's dtype and device."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


def _time_features(time_net: nn.Module, t: Tensor | float, x: Tensor) -> Tensor:
    """time_net of each sample's time, (B, features). One time for the whole batch (a scalar: a one-step generator at a
    fixed time) is embedded once and broadcast, not B times: the same values, without B rows of embedding work."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return time_net(t.reshape(1)).expand(x.shape[0], -1)
    return time_net(t)


def _trunk(in_features: int, dim: int, hidden: int, depth: int, activation: str) -> nn.Sequential:
    """`depth` blocks Linear + activation of width `hidden`, then a Linear back to `dim`."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else hidden, hidden), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(hidden, dim))
    return nn.Sequential(*layers)


class VelocityMLP(nn.Module):
    """v(t, x) for vector data. forward(t: (B,), x: (B, dim)) -> (B, heads * dim); (B, dim) with the default heads 1.

    The time embedding goes through Linear + activation to `hidden` features, which are concatenated with x at
    the input of the trunk. `heads` > 1 (generator matching: velocity, jump rate, jump-law logits) widens the last
    layer; the output is head-major, `out.unflatten(1, (heads, dim))[:, i]` is head i.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 4,
        time_embedding: TimeEmbeddingKind = "sinusoidal",
        embedding_dim: int = 64,
        activation: Activation = "silu",
        heads: int = 1,
    ) -> None:
        super().__init__()
        _check_sizes(dim, hidden, depth, activation, embedding_dim)
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        self.dim, self.heads = dim, heads
        self.time_net = nn.Sequential(
            make_time_embedding(time_embedding, embedding_dim),
            nn.Linear(embedding_dim, hidden),
            _ACTIVATIONS[activation](),
        )
        self.trunk = _trunk(dim + hidden, heads * dim, hidden, depth, activation)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.trunk(torch.cat([x, _time_features(self.time_net, t, x)], dim=-1))


class _TwoTime(nn.Module):
    """What the two-time networks (here and in `unet.py`) share: the embedded pair of times, the flow map and its
    diagonal. Subclasses set `time_pair`, `embed_first` and `embed_second`."""

    def _embedded_times(self, s: Tensor | float, t: Tensor | float, x: Tensor) -> Tensor:
        """(B, 2 * embedding_dim): s and t - s (`s_gap`) or s and t (`s_t`), each embedded."""
        s, t = _batch_times(s, x), _batch_times(t, x)
        second = t - s if self.time_pair == "s_gap" else t
        return torch.cat([self.embed_first(s), self.embed_second(second)], dim=-1)

    def flow_map(self, s: Tensor | float, t: Tensor | float, x: Tensor) -> Tensor:
        """X(s, t, x) = x + (t - s) u(s, t, x); exactly x when s == t. s, t: (B,) or scalars; x: (B, *data_shape)."""
        s, t = _batch_times(s, x), _batch_times(t, x)
        gap = (t - s).view(-1, *[1] * (x.dim() - 1))
        return x + gap * self(s, t, x)

    def velocity(self, t: Tensor | float, x: Tensor) -> Tensor:
        """The diagonal u(t, t, x): an ordinary velocity field (the tangent condition of the flow map)."""
        return self(t, t, x)


class TwoTimeMLP(_TwoTime):
    """Average velocity u(s, t, x) of a flow map X(s, t, x) = x + (t - s) u(s, t, x).

    forward(s: (B,), t: (B,), x: (B, dim)) -> (B, dim). time_pair `s_gap` (default) embeds s and t - s,
    `s_t` embeds s and t; the two embeddings are concatenated, projected to `hidden` features and concatenated
    with x at the input of the trunk.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 4,
        time_embedding: TimeEmbeddingKind = "sinusoidal",
        embedding_dim: int = 64,
        activation: Activation = "silu",
        time_pair: TimePair = "s_gap",
    ) -> None:
        super().__init__()
        _check_sizes(dim, hidden, depth, activation, embedding_dim)
        if time_pair not in ("s_gap", "s_t"):
            raise ValueError(f"time_pair must be 's_gap' or 's_t', got {time_pair!r}")
        self.dim, self.time_pair = dim, time_pair
        # Different seeds: with Fourier features, the two times get independent frequencies.
        self.embed_first = make_time_embedding(time_embedding, embedding_dim, seed=0)
        self.embed_second = make_time_embedding(time_embedding, embedding_dim, seed=1)
        self.time_proj = nn.Sequential(nn.Linear(2 * embedding_dim, hidden), _ACTIVATIONS[activation]())
        self.trunk = _trunk(dim + hidden, dim, hidden, depth, activation)

    def forward(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        return self.trunk(torch.cat([x, self.time_proj(self._embedded_times(s, t, x))], dim=-1))


class GeneratorMLP(nn.Module):
    """A one-step generator G(z) for vector data (MGM, spec section 5). forward(z: (B, dim)) -> x: (B, dim).

    No time input: `depth` blocks Linear + activation of width `hidden`, then a Linear back to `dim`.
    """

    def __init__(self, dim: int, *, hidden: int = 256, depth: int = 4, activation: Activation = "silu") -> None:
        super().__init__()
        _check_sizes(dim, hidden, depth, activation)
        self.dim = dim
        self.trunk = _trunk(dim, dim, hidden, depth, activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.trunk(z)
