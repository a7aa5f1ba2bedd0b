"""Sample-quality metrics: histogram KL (d <= 2), sliced 2-Wasserstein, MMD."""

from mgm_studies.metrics.distances import mmd, sliced_wasserstein2
from mgm_studies.metrics.kl import histogram_kl, histogram_masses, kl_divergence

__all__ = ["histogram_kl", "histogram_masses", "kl_divergence", "mmd", "sliced_wasserstein2"]
