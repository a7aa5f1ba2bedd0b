"""Sample-quality metrics: histogram KL (d <= 2), the checkerboard KL of arXiv 2505.18825, sliced 2-Wasserstein,
MMD."""

from mgm_studies.metrics.distances import mmd, sliced_wasserstein2
from mgm_studies.metrics.kl import histogram_kl, histogram_masses, kl_divergence
from mgm_studies.metrics.kl_paper import kl_paper

__all__ = ["histogram_kl", "histogram_masses", "kl_divergence", "kl_paper", "mmd", "sliced_wasserstein2"]
