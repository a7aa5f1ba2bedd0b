"""U-Nets: shapes over image sizes, the downsampling rule, the flow-map identity, forward-mode AD (float32, float64,
bf16 autocast), gradients, dropout, argument checks and size."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from mgm_studies.builders import build_model
from mgm_studies.models import GeneratorUNet, TwoTimeUNet, UNetConfig, VelocityUNet

SMALL = {"channels": 8, "channel_mult": (1, 2), "norm_groups": 4}
TIMED = {**SMALL, "embedding_dim": 16}
SHAPES = [(c, size, size) for size in (8, 16, 28, 32) for c in (1, 3)]


def build(cls, shape=(1, 8, 8), **options):
    """A small model of `cls`; time options are dropped for the generator."""
    options = {**(SMALL if cls is GeneratorUNet else TIMED), **options}
    return cls(shape, **options)


def batch(shape=(1, 8, 8), n=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g, dtype=dtype) * 0.5
    t = s + 0.1 + torch.rand(n, generator=g, dtype=dtype) * (0.9 - s)
    return s, t, torch.randn(n, *shape, generator=g, dtype=dtype)


def apply(model, s, t, x):
    """The model's main map: v(t, x), the flow map X(s, t, x), or G(x)."""
    if isinstance(model, TwoTimeUNet):
        return model.flow_map(s, t, x)
    return model(t, x) if isinstance(model, VelocityUNet) else model(x)


@pytest.mark.parametrize(
    ("shape", "channel_mult", "expected"),
    [
        ((1, 28, 28), (1, 2, 2, 2), [(28, 28), (14, 14), (7, 7), (7, 7)]),
        ((3, 32, 32), (1, 2, 2, 2), [(32, 32), (16, 16), (8, 8), (4, 4)]),
        ((1, 8, 8), (1, 1, 1, 1, 1), [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]),
        ((3, 12, 10), (1, 2, 2), [(12, 10), (6, 5), (6, 5)]),
    ],
)
def test_feature_maps_are_halved_only_while_height_and_width_are_even(shape, channel_mult, expected):
    model = VelocityUNet(shape, **{**TIMED, "channel_mult": channel_mult})
    assert model.level_sizes == expected
    assert model(0.5, torch.randn(2, *shape)).shape == (2, *shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_output_shapes_of_all_three_models_with_attention_at_the_coarsest_level(shape):
    options = {"channel_mult": (1, 2, 2)}
    coarsest = build(VelocityUNet, shape, **options).level_sizes[-1][0]
    s, t, x = batch(shape, n=2)
    velocity = build(VelocityUNet, shape, attention_resolutions=[coarsest], **options)
    two_time = build(TwoTimeUNet, shape, attention_resolutions=[coarsest], **options)
    generator = build(GeneratorUNet, shape, attention_resolutions=[coarsest], **options)
    assert any(block.attention is not None for block in velocity.unet.middle)
    for out in (velocity(t, x), velocity(0.3, x), two_time(s, t, x), two_time(0.1, 0.6, x)):
        assert out.shape == x.shape
    assert two_time.flow_map(s, t, x).shape == two_time.velocity(t, x).shape == generator(x).shape == x.shape


def test_group_norms_use_a_divisor_of_the_width():
    model = build(VelocityUNet, channels=12, channel_mult=(1, 3), norm_groups=8)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 and m.num_groups <= 8 for m in norms)
    assert {m.num_groups for m in norms if m.num_channels == 12} == {6}


def test_scalar_times_broadcast_to_the_batch():
    torch.manual_seed(0)
    velocity, two_time = build(VelocityUNet), build(TwoTimeUNet)
    _, _, x = batch()
    torch.testing.assert_close(velocity(0.3, x), velocity(torch.full((4,), 0.3), x))
    torch.testing.assert_close(two_time.flow_map(0.2, 0.7, x), two_time.flow_map(torch.full((4,), 0.2), 0.7, x))


def test_flow_map_is_the_identity_at_equal_times_and_moves_otherwise():
    torch.manual_seed(0)
    model = build(TwoTimeUNet)
    s, t, x = batch()
    assert torch.equal(model.flow_map(s, s, x), x)
    assert (model.flow_map(s, t, x) - x).flatten(1).norm(dim=1).min() > 0


def test_velocity_is_the_diagonal_and_s_gap_differs_from_s_t_except_at_s_zero():
    torch.manual_seed(0)
    gap = build(TwoTimeUNet)
    torch.manual_seed(0)
    plain = build(TwoTimeUNet, time_pair="s_t")
    s, t, x = batch()
    torch.testing.assert_close(gap.velocity(t, x), gap(t, t, x))
    assert not torch.allclose(gap(s, t, x), plain(s, t, x))
    # at s = 0 both embed the pair (0, t): same weights, same function
    torch.testing.assert_close(gap(0.0, t, x), plain(0.0, t, x))


@pytest.mark.parametrize("time_embedding", ["sinusoidal", "fourier"])
def test_jvp_of_the_flow_map_in_t_matches_a_finite_difference(time_embedding):
    torch.manual_seed(0)
    model = build(TwoTimeUNet, time_embedding=time_embedding, attention_resolutions=[4]).double()
    s, t, x = batch(dtype=torch.float64)
    value, d_dt = torch.func.jvp(lambda tt: model.flow_map(s, tt, x), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(value, model.flow_map(s, t, x))
    h = 1e-7  # truncation ~h^2 and round-off ~1e-16 / h both near 1e-9 relative here
    central = (model.flow_map(s, t + h, x) - model.flow_map(s, t - h, x)) / (2 * h)
    torch.testing.assert_close(d_dt, central, rtol=1e-6, atol=1e-6 * central.abs().max().item())
    # d/dt X = u + (t - s) du/dt, and at s = t only u remains: the tangent condition
    _, at_diagonal = torch.func.jvp(lambda tt: model.flow_map(s, tt, x), (s,), (torch.ones_like(s),))
    torch.testing.assert_close(at_diagonal, model.velocity(s, x))


@pytest.mark.parametrize("cls", [VelocityUNet, TwoTimeUNet, GeneratorUNet])
def test_jvp_runs_in_float32_and_under_bf16_autocast_and_backpropagates(cls):
    """A joint tangent (1, b): through (s, x) for the flow map, as the Eulerian objectives push, through (t, x) for
    v; b through z for the generator."""
    torch.manual_seed(0)
    model = build(cls, attention_resolutions=[4], dropout=0.1).eval()
    s, t, x = batch()
    ones, zeros, b = torch.ones_like(s), torch.zeros_like(s), torch.randn_like(x)
    tangents = (ones, zeros, b) if cls is TwoTimeUNet else (zeros, ones, b)

    def jvp():
        return torch.func.jvp(lambda ss, tt, xx: apply(model, ss, tt, xx), (s, t, x), tangents)

    value, tangent = jvp()
    assert value.dtype == tangent.dtype == torch.float32 and torch.isfinite(tangent).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_value, low_tangent = jvp()
    assert torch.isfinite(low_tangent).all()
    assert (low_tangent.float() - tangent).norm() < 0.1 * tangent.norm()
    assert (low_value.float() - value).norm() < 0.1 * value.norm()
    tangent.square().sum().backward()  # the loss then backpropagates through the JVP
    # a constant output bias moves no tangent; the flow map's tangent carries u itself, bias included
    without_gradient = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert without_gradient == (set() if cls is TwoTimeUNet else {"unet.out_conv.bias"})


@pytest.mark.parametrize("cls", [VelocityUNet, TwoTimeUNet, GeneratorUNet])
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(0)
    model = build(cls, attention_resolutions=[8, 4], dropout=0.1)
    apply(model, *batch()).square().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", [VelocityUNet, TwoTimeUNet, GeneratorUNet])
def test_eval_is_deterministic_and_dropout_acts_in_train_mode(cls):
    torch.manual_seed(0)
    inputs = batch()
    model = build(cls, dropout=0.3)
    assert not torch.equal(apply(model, *inputs), apply(model, *inputs))
    model.eval()
    assert torch.equal(apply(model, *inputs), apply(model, *inputs))
    no_dropout = build(cls).train()
    assert torch.equal(apply(no_dropout, *inputs), apply(no_dropout, *inputs))


@pytest.mark.parametrize("cls", [VelocityUNet, TwoTimeUNet, GeneratorUNet])
def test_init_is_deterministic_under_manual_seed_and_not_degenerate(cls):
    torch.manual_seed(7)
    first = build(cls)
    torch.manual_seed(7)
    second = build(cls)
    torch.manual_seed(8)
    third = build(cls).state_dict()
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    assert not all(torch.equal(v, third[k]) for k, v in first.state_dict().items())
    # non-zero outputs that depend on the input (MGM needs a non-degenerate generator)
    s, t, x = batch()
    out = apply(first, s, t, x) - (x if cls is TwoTimeUNet else 0)
    assert out.std() > 1e-2 and (out[0] - out[1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"shape": (1, 8)}, "shape"),
        ({"shape": (0, 8, 8)}, "shape"),
        ({"channels": 0}, "channels"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"channel_mult": (1, 0)}, "channel_mult"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"attention_resolutions": [16]}, "attention_resolutions"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"norm_groups": 0}, "norm_groups"),
        ({"embedding_dim": 15}, "embedding_dim"),
        ({"time_embedding": "learned"}, "time_embedding"),
    ],
)
@pytest.mark.parametrize("cls", [VelocityUNet, TwoTimeUNet, GeneratorUNet])
def test_bad_arguments_raise(cls, options, name):
    if cls is GeneratorUNet and name in ("embedding_dim", "time_embedding"):
        with pytest.raises(TypeError):  # the generator has no time options at all
            build(cls, **options)
        return
    with pytest.raises(ValueError, match=name):
        build(cls, **options)


def test_bad_time_pair_and_wrong_input_shape_raise():
    with pytest.raises(ValueError, match="time_pair"):
        build(TwoTimeUNet, time_pair="t_s")
    with pytest.raises(ValueError, match=r"x must have shape \(B, \*\(1, 8, 8\)\)"):
        build(VelocityUNet)(0.5, torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        build(GeneratorUNet)(torch.randn(2, 64))


def test_an_8x8_model_is_small_and_fast_on_cpu():
    torch.manual_seed(0)
    model = VelocityUNet((1, 8, 8), channels=16)
    count = sum(p.numel() for p in model.parameters())
    _, _, x = batch(n=64)
    t = torch.rand(64)
    durations = []
    for _ in range(5):
        start = time.perf_counter()
        model(t, x).square().mean().backward()
        durations.append(time.perf_counter() - start)
    print(
        f"VelocityUNet 8x8 channels=16: {count} parameters, forward+backward of 64: {min(durations):.3f} s (best of 5)"
    )
    assert count < 200_000


def test_the_flow_map_papers_cifar10_unet_size():
    """The EDM2-size U-Net of arXiv 2505.18825 (Table 2), as configs/papers/flowmaps_cifar10_*.yaml build it: 128
    channels, multipliers [2, 2, 2], 4 residual blocks a level, attention at 16 x 16 only, dropout 0.13. Measured:
    53,370,883 parameters as a two-time model at 3 x 32 x 32 (53,338,115 as a velocity model); EDM's DDPM++ CIFAR-10
    network, the size EDM2's config aims at, has about 56 M."""
    from mgm_studies.models.unet import _ResBlock, _SelfAttention

    config = UNetConfig(
        name="unet", channels=128, channel_mult=[2, 2, 2], num_res_blocks=4, attention_resolutions=[16], dropout=0.13
    )
    model = build_model(config, (3, 32, 32), "two_time")
    assert sum(p.numel() for p in model.parameters()) == 53_370_883
    blocks = [m for m in model.modules() if isinstance(m, _ResBlock)]
    # 4 blocks down and 5 up at each of the 3 levels, and the middle two
    assert len(blocks) == 3 * (4 + 5) + 2 and all(b.dropout.p == 0.13 for b in blocks)
    assert sum(isinstance(m, _SelfAttention) for m in model.modules()) == 4 + 5  # the 16 x 16 level only
