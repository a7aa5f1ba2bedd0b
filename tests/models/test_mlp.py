"""Networks: shapes, deterministic init, the flow-map identity X(s, s, x) = x, forward-mode AD, gradients."""

from __future__ import annotations

import pytest
import torch

from mgm_studies.models import (
    FourierTimeEmbedding,
    SinusoidalTimeEmbedding,
    TwoTimeMLP,
    VelocityMLP,
    make_time_embedding,
)

SMALL = {"hidden": 32, "depth": 2, "embedding_dim": 16}


def batch(n=6, dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g) * 0.5
    t = s + torch.rand(n, generator=g) * (1 - s)
    return s, t, torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("kind", ["sinusoidal", "fourier"])
def test_time_embeddings_shape_and_dtype(kind):
    embedding = make_time_embedding(kind, 10)
    out = embedding(torch.linspace(0, 1, 7))
    assert out.shape == (7, 10) and out.dtype == torch.float32
    assert not list(embedding.parameters())  # fixed features, nothing to train
    assert torch.all(out.abs() <= 1.0)


def test_sinusoidal_embedding_scales_time_and_fourier_features_follow_the_seed():
    t = torch.tensor([0.25])
    first = SinusoidalTimeEmbedding(4, max_period=100.0, scale=1000.0)(t)
    # frequencies 1 and 1/10 on the 250 = 1000 * 0.25 time scale
    expected = torch.tensor([[torch.cos(torch.tensor(250.0)), torch.cos(torch.tensor(25.0))]])
    torch.testing.assert_close(first[:, :2], expected)
    assert torch.equal(FourierTimeEmbedding(8, seed=3).frequencies, FourierTimeEmbedding(8, seed=3).frequencies)
    assert not torch.equal(FourierTimeEmbedding(8, seed=3).frequencies, FourierTimeEmbedding(8, seed=4).frequencies)
    assert "frequencies" in FourierTimeEmbedding(8).state_dict()


@pytest.mark.parametrize("time_embedding", ["sinusoidal", "fourier"])
@pytest.mark.parametrize("activation", ["silu", "gelu", "relu"])
def test_output_shapes(time_embedding, activation):
    s, t, x = batch()
    options = dict(SMALL, time_embedding=time_embedding, activation=activation)
    assert VelocityMLP(3, **options)(t, x).shape == (6, 3)
    for time_pair in ("s_gap", "s_t"):
        model = TwoTimeMLP(3, time_pair=time_pair, **options)
        assert model(s, t, x).shape == (6, 3)
        assert model.flow_map(s, t, x).shape == (6, 3)
        assert model.velocity(t, x).shape == (6, 3)


@pytest.mark.parametrize("cls", [VelocityMLP, TwoTimeMLP])
def test_init_is_deterministic_under_manual_seed(cls):
    torch.manual_seed(7)
    first = cls(2, **SMALL).state_dict()
    torch.manual_seed(7)
    second = cls(2, **SMALL).state_dict()
    torch.manual_seed(8)
    third = cls(2, **SMALL).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_flow_map_is_the_identity_at_equal_times_and_moves_otherwise():
    torch.manual_seed(0)
    model = TwoTimeMLP(3, **SMALL)
    s, t, x = batch()
    assert torch.equal(model.flow_map(s, s, x), x)
    assert (model.flow_map(s, t, x) - x).abs().min() > 0
    # scalars broadcast to the batch
    torch.testing.assert_close(model.flow_map(0.2, 0.7, x), model.flow_map(torch.full((6,), 0.2), 0.7, x))


def test_velocity_is_the_diagonal_and_s_gap_differs_from_s_t():
    torch.manual_seed(0)
    gap = TwoTimeMLP(3, **SMALL)
    torch.manual_seed(0)
    plain = TwoTimeMLP(3, time_pair="s_t", **SMALL)
    s, t, x = batch()
    torch.testing.assert_close(gap.velocity(t, x), gap(t, t, x))
    assert not torch.allclose(gap(s, t, x), plain(s, t, x))


@pytest.mark.parametrize("time_embedding", ["sinusoidal", "fourier"])
def test_jvp_of_the_flow_map_in_t_matches_a_finite_difference(time_embedding):
    torch.manual_seed(0)
    model = TwoTimeMLP(3, time_embedding=time_embedding, **SMALL).double()
    s, t, x = (v.double() for v in batch())
    value, d_dt = torch.func.jvp(lambda tt: model.flow_map(s, tt, x), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(value, model.flow_map(s, t, x))
    h = 1e-6
    central = (model.flow_map(s, t + h, x) - model.flow_map(s, t - h, x)) / (2 * h)
    torch.testing.assert_close(d_dt, central, rtol=1e-5, atol=1e-6)
    # d/dt X = u + (t - s) du/dt, and at s = t only u remains: the tangent condition
    _, at_diagonal = torch.func.jvp(lambda tt: model.flow_map(s, tt, x), (s,), (torch.ones_like(s),))
    torch.testing.assert_close(at_diagonal, model.velocity(s, x))


def test_jvp_works_in_float32_with_a_joint_tangent_in_s_and_x():
    """The Eulerian objectives push a tangent (1, b) through (s, x) -> X(s, t, x)."""
    torch.manual_seed(0)
    model = TwoTimeMLP(3, **SMALL)
    s, t, x = batch()
    b = torch.randn_like(x)
    value, tangent = torch.func.jvp(lambda ss, xx: model.flow_map(ss, t, xx), (s, x), (torch.ones_like(s), b))
    assert value.dtype == tangent.dtype == torch.float32 and torch.isfinite(tangent).all()
    tangent.square().sum().backward()  # the loss then backpropagates through the JVP
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("time_embedding", ["sinusoidal", "fourier"])
def test_one_time_for_the_batch_gives_the_per_sample_values_and_gradients(time_embedding):
    # A scalar time is embedded once and broadcast (a one-step generator at a fixed time): same outputs and gradients.
    torch.manual_seed(0)
    model = VelocityMLP(3, time_embedding=time_embedding, **SMALL)
    _, _, x = batch()
    outputs, gradients = [], []
    for t in (torch.tensor(0.3), torch.full((x.shape[0],), 0.3)):
        model.zero_grad()
        out = model(t, x)
        out.square().sum().backward()
        outputs.append(out.detach())
        gradients.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1])
    for scalar, per_sample in zip(*gradients, strict=True):
        torch.testing.assert_close(scalar, per_sample)


@pytest.mark.parametrize("cls", [VelocityMLP, TwoTimeMLP])
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(0)
    model = cls(3, **SMALL)
    s, t, x = batch()
    out = model(t, x) if cls is VelocityMLP else model.flow_map(s, t, x)
    out.square().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dim": 0}, "dim"),
        ({"depth": 0}, "depth"),
        ({"hidden": 0}, "hidden"),
        ({"embedding_dim": 15}, "embedding_dim"),
        ({"activation": "tanh"}, "activation"),
        ({"time_embedding": "learned"}, "time_embedding"),
    ],
)
@pytest.mark.parametrize("cls", [VelocityMLP, TwoTimeMLP])
def test_bad_arguments_raise(cls, kwargs, name):
    kwargs = {"dim": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        cls(kwargs.pop("dim"), **kwargs)


def test_bad_time_pair_and_embedding_dim_raise():
    with pytest.raises(ValueError, match="time_pair"):
        TwoTimeMLP(2, time_pair="t_s")
    with pytest.raises(ValueError, match="dim"):
        SinusoidalTimeEmbedding(3)
    with pytest.raises(ValueError, match="sigma"):
        FourierTimeEmbedding(4, sigma=0.0)
