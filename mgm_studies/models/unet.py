"""U-Nets for image data: v(t, x), u(s, t, x) and a one-step generator G(z), mirroring `mlp.py` (spec sections 2, 3, 5).

Layout (after DDPM/ADM): a 3x3 input conv; per level of `channel_mult`, `num_res_blocks` residual blocks of
`channels * mult` channels (each followed by single-head self-attention where the level's height is in
`attention_resolutions`), then a resampling conv to the next level; a middle of two residual blocks; the mirror image
going up, with `num_res_blocks + 1` blocks per level, each fed the matching down-path activation by concatenation;
GroupNorm, SiLU and a 3x3 conv back to C channels. The (time) conditioning vector is added inside every residual block.

Downsampling rule: between two levels the feature map is halved (stride-2 conv; going up, nearest x2 + conv) only when
its height and width are both even; otherwise the next level keeps the resolution and its resampling convs have
stride 1. So 28 -> 14 -> 7 -> 7 and 32 -> 16 -> 8 -> 4; `level_sizes` lists the (H, W) of each level.

Initialisation: PyTorch defaults everywhere, no zero-initialised layer, so that, as with the MLPs, every model (the
generator in particular, which MGM needs non-degenerate) has non-zero outputs at init and every parameter gets a
non-zero gradient from the first step.

Only out-of-place operations, and attention as explicit matmul + softmax (`F.scaled_dot_product_attention` has no
forward-mode AD on CPU in torch 2.14), so that `torch.func.jvp` runs through every model.

A little over 300 lines: the three networks, the blocks they share and their config section read together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mgm_studies.configbase import PositiveInt, StrictModel
from mgm_studies.models.embeddings import EmbeddingDim, TimeEmbeddingKind, make_time_embedding
from mgm_studies.models.mlp import TimePair, _time_features, _TwoTime


class UNetConfig(StrictModel):
    """The U-Nets below, for image data: `channels` at the first resolution, times `channel_mult[i]` at the i-th,
    `num_res_blocks` residual blocks per resolution, self-attention at the spatial sizes in `attention_resolutions`."""

    name: Literal["unet"]
    channels: PositiveInt = 32
    channel_mult: list[PositiveInt] = Field(default_factory=lambda: [1, 2], min_length=1)
    num_res_blocks: PositiveInt = 1
    attention_resolutions: list[PositiveInt] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm_groups: PositiveInt = 8
    time_embedding: TimeEmbeddingKind = "sinusoidal"
    embedding_dim: EmbeddingDim = 64
    time_pair: TimePair = Field("s_gap", description="two-time models: embed (s, t - s) or (s, t)")

    def build(self, shape: tuple[int, ...], kind: str, heads: int = 1) -> nn.Module:
        """The U-Net of `kind` (`velocity` with `heads` outputs, `two_time`, `generator`) for samples (C, H, W)."""
        layout = self.model_dump(exclude={"name", "time_embedding", "embedding_dim", "time_pair"})
        timed = dict(layout, time_embedding=self.time_embedding, embedding_dim=self.embedding_dim)
        if kind == "velocity":
            return VelocityUNet(shape, **timed, heads=heads)
        if kind == "two_time":
            return TwoTimeUNet(shape, **timed, time_pair=self.time_pair)
        if kind == "generator":
            return GeneratorUNet(shape, **layout)
        raise ValueError(f"no model for kind {kind!r}")


class _GroupNorm(nn.GroupNorm):
    """GroupNorm computed in its parameters' dtype. Under CPU autocast a bf16 input would give a bf16 output with a
    float32 forward-mode tangent (torch 2.14), which the next conv rejects; float32 statistics are safer anyway."""

    def forward(self, h: Tensor) -> Tensor:
        return super().forward(h.to(self.weight.dtype))


def _norm(num_channels: int, norm_groups: int) -> _GroupNorm:
    """GroupNorm with the largest group count <= norm_groups that divides num_channels."""
    groups = max(g for g in range(1, min(norm_groups, num_channels) + 1) if num_channels % g == 0)
    return _GroupNorm(groups, num_channels)


def _level_sizes(height: int, width: int, num_levels: int) -> list[tuple[int, int]]:
    """(H, W) of each level: halved from one level to the next only while both are even."""
    sizes = [(height, width)]
    for _ in range(num_levels - 1):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2) if h % 2 == 0 and w % 2 == 0 else (h, w))
    return sizes


def _conditioning(embedding_dim: int, num_times: int, cond_dim: int) -> nn.Sequential:
    """`num_times` concatenated time embeddings (B, num_times * embedding_dim) -> Linear, SiLU, Linear, SiLU ->
    (B, cond_dim), the vector every residual block projects and adds."""
    if embedding_dim < 2 or embedding_dim % 2:
        raise ValueError(f"embedding_dim must be even and >= 2, got {embedding_dim}")
    in_features = num_times * embedding_dim
    return nn.Sequential(nn.Linear(in_features, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim), nn.SiLU())


class _ResBlock(nn.Module):
    """GroupNorm, SiLU, conv, + Linear(cond), GroupNorm, SiLU, dropout, conv; plus the skip (1x1 conv if the width
    changes). forward(h: (B, in, H, W), cond: (B, cond_dim) or None) -> (B, out, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int | None, dropout: float, norm_groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch, norm_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.cond_proj = nn.Linear(cond_dim, out_ch) if cond_dim is not None else None
        self.norm2 = _norm(out_ch, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, h: Tensor, cond: Tensor | None) -> Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        if self.cond_proj is not None:
            out = out + self.cond_proj(cond)[:, :, None, None]
        out = self.conv2(self.dropout(F.silu(self.norm2(out))))
        return self.skip(h) + out


class _SelfAttention(nn.Module):
    """Single-head self-attention over the H * W positions, with a residual. (B, ch, H, W) -> (B, ch, H, W)."""

    def __init__(self, ch: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = _norm(ch, norm_groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, h: Tensor) -> Tensor:
        b, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, height * width).unbind(1)  # each (B, ch, HW)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, HW query, HW key)
        out = (v @ weights.transpose(1, 2)).reshape(b, c, height, width)
        return h + self.proj(out)


class _Block(nn.Module):
    """A residual block, then self-attention if `attention`. forward(h, cond) -> (B, out, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int | None, attention: bool, dropout: float, groups: int):
        super().__init__()
        self.res = _ResBlock(in_ch, out_ch, cond_dim, dropout, groups)
        self.attention = _SelfAttention(out_ch, groups) if attention else None

    def forward(self, h: Tensor, cond: Tensor | None) -> Tensor:
        h = self.res(h, cond)
        return self.attention(h) if self.attention is not None else h


class _Resample(nn.Module):
    """Between two levels: 3x3 conv, stride 2 down / nearest x2 then conv up when `halve`, else stride 1."""

    def __init__(self, ch: int, down: bool, halve: bool) -> None:
        super().__init__()
        self.upsample = halve and not down
        self.conv = nn.Conv2d(ch, ch, 3, stride=2 if halve and down else 1, padding=1)

    def forward(self, h: Tensor, cond: Tensor | None) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest") if self.upsample else h)


class _UNet(nn.Module):
    """The shared trunk: forward(x: (B, C, H, W), cond: (B, cond_dim) or None) -> (B, heads * C, H, W). The layout
    options are `UNetConfig`'s, with its defaults; a `conditioned` trunk takes a cond vector of 4 * channels."""

    def __init__(
        self,
        shape: Sequence[int],
        conditioned: bool,
        heads: int = 1,
        *,
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        if len(shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in shape):
            raise ValueError(f"shape must be (C, H, W), three integers >= 1, got {tuple(shape)!r}")
        for name, value in (("channels", channels), ("num_res_blocks", num_res_blocks), ("norm_groups", norm_groups)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if len(channel_mult) == 0 or not all(isinstance(m, int) and m >= 1 for m in channel_mult):
            raise ValueError(f"channel_mult must be a non-empty sequence of integers >= 1, got {channel_mult!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        sizes = _level_sizes(shape[1], shape[2], len(channel_mult))
        heights = sorted({height for height, _ in sizes}, reverse=True)
        unknown = [r for r in attention_resolutions if r not in heights]
        if unknown:
            raise ValueError(f"attention_resolutions {unknown} are not among the feature-map heights {heights}")
        self.shape, self.level_sizes = tuple(shape), sizes
        self.cond_dim = cond_dim = 4 * channels if conditioned else None
        options = {"cond_dim": cond_dim, "dropout": dropout, "groups": norm_groups}
        self.input_conv = nn.Conv2d(shape[0], channels, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skip_channels, ch = [channels], channels
        for level, mult in enumerate(channel_mult):
            attention = sizes[level][0] in attention_resolutions
            for _ in range(num_res_blocks):
                self.down.append(_Block(ch, channels * mult, attention=attention, **options))
                ch = channels * mult
                skip_channels.append(ch)
            if level + 1 < len(channel_mult):
                self.down.append(_Resample(ch, down=True, halve=sizes[level + 1] != sizes[level]))
                skip_channels.append(ch)
        attention = sizes[-1][0] in attention_resolutions
        self.middle = nn.ModuleList(
            [_Block(ch, ch, attention=attention, **options), _Block(ch, ch, attention=False, **options)]
        )
        for level in reversed(range(len(channel_mult))):
            attention, out = sizes[level][0] in attention_resolutions, channels * channel_mult[level]
            for _ in range(num_res_blocks + 1):
                self.up.append(_Block(ch + skip_channels.pop(), out, attention=attention, **options))
                ch = out
            if level > 0:
                self.up.append(_Resample(ch, down=False, halve=sizes[level] != sizes[level - 1]))
        self.out_norm = _norm(ch, norm_groups)
        self.out_conv = nn.Conv2d(ch, heads * shape[0], 3, padding=1)

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, *{self.shape}), got {tuple(x.shape)}")
        h = self.input_conv(x)
        skips = [h]
        for module in self.down:
            h = module(h, cond)
            skips.append(h)
        for module in self.middle:
            h = module(h, cond)
        for module in self.up:
            h = module(torch.cat([h, skips.pop()], dim=1) if isinstance(module, _Block) else h, cond)
        return self.out_conv(F.silu(self.out_norm(h)))


class VelocityUNet(nn.Module):
    """v(t, x) for images. forward(t: (B,) or scalar, x: (B, C, H, W)) -> (B, heads * C, H, W); `shape` is (C, H, W)
    and `heads` is 1 by default, which gives (B, C, H, W). `layout`: the trunk's options (`UNetConfig`'s layout fields).
    `heads` > 1 (generator matching: velocity, jump rate, jump-law logits) widens the output conv; the output is
    head-major, `out.unflatten(1, (heads, C))[:, i]` is head i.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        time_embedding: TimeEmbeddingKind = "sinusoidal",
        embedding_dim: int = 64,
        heads: int = 1,
        **layout,
    ) -> None:
        super().__init__()
        self.unet = _UNet(shape, conditioned=True, heads=heads, **layout)
        self.shape, self.level_sizes = self.unet.shape, self.unet.level_sizes
        conditioning = _conditioning(embedding_dim, 1, self.unet.cond_dim)
        self.time_net = nn.Sequential(make_time_embedding(time_embedding, embedding_dim), conditioning)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        return self.unet(x, _time_features(self.time_net, t, x))


class TwoTimeUNet(_TwoTime):
    """Average velocity u(s, t, x) of a flow map X(s, t, x) = x + (t - s) u(s, t, x), for images.

    forward(s, t: (B,) or scalars, x: (B, C, H, W)) -> (B, C, H, W). As `TwoTimeMLP`: time_pair `s_gap` (default)
    embeds s and t - s, `s_t` embeds s and t, with two embeddings (seeds 0 and 1), conditioning every block.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        time_embedding: TimeEmbeddingKind = "sinusoidal",
        embedding_dim: int = 64,
        time_pair: TimePair = "s_gap",
        **layout,
    ) -> None:
        super().__init__()
        if time_pair not in ("s_gap", "s_t"):
            raise ValueError(f"time_pair must be 's_gap' or 's_t', got {time_pair!r}")
        self.time_pair = time_pair
        self.unet = _UNet(shape, conditioned=True, **layout)
        self.shape, self.level_sizes = self.unet.shape, self.unet.level_sizes
        self.time_proj = _conditioning(embedding_dim, 2, self.unet.cond_dim)
        # Different seeds: with Fourier features, the two times get independent frequencies.
        self.embed_first = make_time_embedding(time_embedding, embedding_dim, seed=0)
        self.embed_second = make_time_embedding(time_embedding, embedding_dim, seed=1)

    def forward(self, s: Tensor | float, t: Tensor | float, x: Tensor) -> Tensor:
        return self.unet(x, self.time_proj(self._embedded_times(s, t, x)))


class GeneratorUNet(nn.Module):
    """A one-step generator G(z) for images (MGM, spec section 5). forward(z: (B, C, H, W)) -> x: (B, C, H, W).

    No time input and no conditioning: the residual blocks have no conditioning projection. `layout` as `VelocityUNet`.
    """

    def __init__(self, shape: Sequence[int], **layout) -> None:
        super().__init__()
        self.unet = _UNet(shape, conditioned=False, **layout)
        self.shape, self.level_sizes = self.unet.shape, self.unet.level_sizes

    def forward(self, z: Tensor) -> Tensor:
        return self.unet(z, None)
