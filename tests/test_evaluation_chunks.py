"""Chunked sampling and evaluation: the same noise and samples as one whole draw, memory bounded by the chunk."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
from conftest import small_config

from mgm_studies import evaluation
from mgm_studies.builders import build_model
from mgm_studies.config import parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.data import data_shape
from mgm_studies.evaluation import chunk_sizes, evaluate, generate_chunks, noise_chunks
from mgm_studies.interpolants import Interpolant
from mgm_studies.metrics import histogram_masses
from mgm_studies.metrics import kl as kl_module
from mgm_studies.runs import build_run
from mgm_studies.sample_file import write_samples

CPU = torch.device("cpu")


@pytest.fixture
def run():
    """A tiny SI run's parts and an untrained (deterministic) model."""
    config = parse_run_config(small_config())
    parts = build_run(config)
    dataset, objective = parts.dataset, parts.objective
    torch.manual_seed(0)
    model = build_model(config.model, data_shape(dataset), objective.model_kind).eval()
    return config, dataset, objective, model


@pytest.mark.parametrize("shape", [(2,), (3,), (1, 8, 8)])
@pytest.mark.parametrize("n", [1, 5, 47, 48, 49, 200, 1001])
def test_chunked_noise_is_the_noise_of_one_draw(monkeypatch, shape, n):
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 48)
    sizes = chunk_sizes(n, shape)
    assert sum(sizes) == n and all(s % 16 == 0 for s in sizes[:-1])
    assert len(sizes) == 1 or sizes[-1] * math.prod(shape) >= 16  # a ragged tail of < 16 values is merged
    interpolant = Interpolant("linear", "none", sigma0=0.5)
    whole = interpolant.noise((n, *shape), torch.Generator().manual_seed(7))
    chunked = torch.cat(list(noise_chunks(interpolant, n, shape, torch.Generator().manual_seed(7))))
    assert torch.equal(chunked, whole)


def test_chunk_size_is_bounded_in_samples_and_values(monkeypatch):
    assert chunk_sizes(10**6, (2,))[0] == evaluation.SAMPLE_CHUNK
    assert chunk_sizes(10**6, (3, 32, 32))[0] * 3 * 32 * 32 <= evaluation.CHUNK_VALUES
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 5)
    assert chunk_sizes(100, (2,))[0] == 16  # never below torch's 16-value normal block


def test_chunked_generation_equals_one_call(monkeypatch, run):
    _, _, objective, model = run
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 64)
    noise = objective.interpolant.noise((300, 2), torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = objective.sample(model, noise, 4)
    parts = list(generate_chunks(objective, model, noise.split(chunk_sizes(300, (2,))), 4, CPU))
    assert len(parts) == 5 and parts[-1].nfe == whole.nfe
    torch.testing.assert_close(torch.cat([p.x for p in parts]), whole.x, rtol=1e-6, atol=1e-6)


def test_evaluation_over_several_chunks_matches_one_chunk(monkeypatch, run):
    config, dataset, objective, model = run
    eval_config = config.eval.model_copy(update={"metrics": ["kl", "sw2", "mmd"], "steps": [1, 2]})

    def metrics(chunk: int):
        monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", chunk)
        return evaluate(model, objective, dataset, eval_config, step=0, device=CPU, num_samples=1000)

    one, many = metrics(8192), metrics(64)  # one chunk, then 16
    assert set(many.metrics) == {f"{m}/nfe-{k}" for m in ("kl", "sw2", "mmd", "fevals") for k in (1, 2)}
    assert all(math.isfinite(v) for v in many.metrics.values())
    for key, value in one.metrics.items():
        assert many.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert many.samples[2].shape == (1000, 2) and many.reference.shape == (1000, 2)


def test_distances_use_a_bounded_subset_and_kl_all_samples(monkeypatch, run):
    config, dataset, objective, model = run
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 64)
    monkeypatch.setattr(evaluation, "DISTANCE_POINTS", 100)
    eval_config = config.eval.model_copy(update={"metrics": ["kl", "sw2"], "steps": [2]})
    result = evaluate(model, objective, dataset, eval_config, step=0, device=CPU, num_samples=1000)
    assert result.samples[2].shape == (100, 2) and result.reference.shape == (100, 2)
    # KL counted every sample: recompute it from the whole draw of the same noise.
    noise = objective.interpolant.noise((1000, 2), torch.Generator().manual_seed(eval_config.seed))
    with torch.no_grad():
        x = objective.sample(model, noise, 2).x
    spec = dataset.histogram
    data = kl_module.data_masses(dataset, spec, reference_size=eval_config.reference_samples)
    expected = kl_module.kl_divergence(data, histogram_masses(x, spec), eval_config.kl_eps)
    assert result.metrics["kl/nfe-2"] == pytest.approx(expected, rel=1e-6)


def test_a_kl_reference_beyond_one_draw_is_binned_in_parts(monkeypatch):
    from mgm_studies.data import make_toy_dataset

    moons = make_toy_dataset("moons")  # no exact bin masses: KL draws a reference
    assert moons.bin_masses(moons.histogram) is None
    monkeypatch.setattr(kl_module, "REFERENCE_CHUNK", 1000)
    masses = kl_module.data_masses(moons, moons.histogram, reference_size=4500, generator=torch.Generator())
    assert masses.shape == (moons.histogram.num_cells + 1,) and masses.sum() == pytest.approx(1.0)
    whole = histogram_masses(moons.sample(50_000, torch.Generator().manual_seed(3)), moons.histogram)
    assert kl_module.kl_divergence(whole, masses, 1e-6) < 0.5  # the same law


def test_write_samples_streams_chunks_into_one_parquet(monkeypatch, tmp_path, run):
    _, _, objective, model = run
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 64)
    path = tmp_path / "s.parquet"
    nfe = write_samples(objective, model, (2,), path, num_samples=1000, num_steps=3, seed=5, device=CPU)
    file = pq.ParquetFile(path)
    assert file.metadata.num_rows == 1000 and file.metadata.num_row_groups == len(chunk_sizes(1000, (2,))) > 1
    table = file.read()
    assert table.column_names == ["x0", "x1"]
    noise = objective.interpolant.noise((1000, 2), torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole = objective.sample(model, noise, 3)
    assert nfe == whole.nfe
    written = torch.tensor(table.to_pandas().to_numpy())
    torch.testing.assert_close(written, whole.x, rtol=1e-6, atol=1e-6)


def test_fid_with_more_images_than_memory_is_refused_before_sampling():
    config = parse_run_config(small_config(data={"name": "digits"}, model={"name": "unet"}, eval={"metrics": ["fid"]}))
    parts = build_run(config)
    dataset, objective = parts.dataset, parts.objective
    with pytest.raises(ConfigError) as caught:
        evaluate(None, objective, dataset, config.eval, step=0, device=CPU, num_samples=10**10)
    assert caught.value.problems[0][0] == "--num-samples"
