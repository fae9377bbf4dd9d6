"""Distribution overlap of two sets of music, in the style of Yang & Lerch 2020.

Per feature of `models.music_features` (each 4-bar segment a vector):
- distance overlap: the overlap area of the intra-set distance distribution (Euclidean
  distances between the generated segments) and the inter-set distance distribution (between
  generated and real segments). Near 1: a generated segment is as far from real segments as
  from other generated ones — the sets are alike in that feature.
- value overlap: the overlap area of the distributions of the feature values themselves
  (scalar features directly, histogram features through their scalar summary,
  `music_features.VALUE_SUMMARIES`).
Densities are Gaussian kernel density estimates (scipy's `gaussian_kde`, Scott's bandwidth);
a sample without spread (every value equal) is a narrow Gaussian at its value, 2 % of the
common range wide. The overlap area is the integral of min(p, q) on a 512-point grid.
Large sets are subsampled (deterministically) to keep this quick.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist, pdist
from scipy.stats import gaussian_kde

from models.music_features import FEATURES, FeatureSet

GRID_POINTS = 512
MAX_SEGMENTS = 400  # per set, for the distances (400 → 79 800 intra-set distances)
MAX_KDE_SAMPLE = 2000  # points a density is estimated from
NARROW_WIDTH = 0.02  # of the common range: the width given to a sample without spread


def _subsample(values: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[np.sort(rng.choice(len(values), size=limit, replace=False))]


def _density(sample: np.ndarray, grid: np.ndarray, narrow: float) -> np.ndarray:
    if len(sample) >= 2 and np.ptp(sample) > 0:
        try:
            return gaussian_kde(sample)(grid)
        except np.linalg.LinAlgError:  # (near-)singular covariance: fall through to the narrow Gaussian
            pass
    centre = float(np.mean(sample))
    return np.exp(-0.5 * ((grid - centre) / narrow) ** 2) / (narrow * math.sqrt(2 * math.pi))


def overlap_area(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Overlap area (0..1) of the densities of two 1-D samples; NaN if either is empty."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return math.nan
    rng = np.random.default_rng([seed, 0x0E1A])
    a, b = _subsample(a, MAX_KDE_SAMPLE, rng), _subsample(b, MAX_KDE_SAMPLE, rng)
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    span = high - low
    narrow = NARROW_WIDTH * span if span > 0 else 1e-3 * max(1.0, abs(low))
    # Room for the kernels' tails: Scott's bandwidth is at most about the sample's spread.
    pad = 4.0 * max(float(np.std(a)), float(np.std(b)), narrow)
    grid = np.linspace(low - pad, high + pad, GRID_POINTS)
    p, q = _density(a, grid, narrow), _density(b, grid, narrow)
    area = float(np.sum(np.minimum(p, q)) * (grid[1] - grid[0]))
    return min(max(area, 0.0), 1.0)


def distance_overlap(generated: np.ndarray, real: np.ndarray, seed: int = 0) -> float:
    """Overlap of the intra-set distances of `generated` (n, d) with its inter-set distances
    to `real` (m, d); NaN when generated has fewer than 2 rows or real none."""
    rng = np.random.default_rng([seed, 0xD157])
    generated = _subsample(np.asarray(generated, dtype=np.float64), MAX_SEGMENTS, rng)
    real = _subsample(np.asarray(real, dtype=np.float64), MAX_SEGMENTS, rng)
    if len(generated) < 2 or not len(real):
        return math.nan
    return overlap_area(pdist(generated), cdist(generated, real).ravel(), seed)


def set_overlaps(generated: FeatureSet, real: FeatureSet, seed: int = 0) -> dict[str, Any]:
    """Per feature ``{"distance": .., "value": ..}`` and their means over the features
    (``mean_distance``, ``mean_value``; features that are NaN left out of the mean)."""
    per_feature = {name: {"distance": distance_overlap(generated.vectors[name], real.vectors[name], seed),
                          "value": overlap_area(generated.values(name), real.values(name), seed)}
                   for name in FEATURES}
    result: dict[str, Any] = {"features": per_feature}
    for kind in ("distance", "value"):
        values = np.array([f[kind] for f in per_feature.values()], dtype=np.float64)
        values = values[np.isfinite(values)]
        result[f"mean_{kind}"] = float(values.mean()) if values.size else math.nan
    return result
