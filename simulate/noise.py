"""Counting statistics, dark frames, sentinels and the pixel type: expected counts → stored frames.

Random streams: every random draw comes from ``numpy.random.SeedSequence(seed).spawn(...)`` children with
a fixed role (:data:`STREAMS`), so the same seed gives identical bytes and adding a feature never changes
the draws of another. Frames are processed in blocks of :data:`BLOCK_ROWS` rows to bound memory; the block
size is fixed, so the result does not depend on it.

Model per pixel (docs/simulate.md, "Noise model")::

    dark_map  = dark_counts + N(0, dark_noise_counts²)            (drawn once, fixed pattern)
    frame     = Poisson(expected) + dark_map + N(0, read_noise²)  (each frame independently)
    dark      = dark_map + N(0, read_noise²)
    stored    = clip(round(value), 0, saturation)                 (no rounding for float32)

then gap pixels take ``gap_value`` and bad pixels ``bad_pixel_value`` (in frames and dark).
"""

from __future__ import annotations

import numpy as np

from .config import DetectorResponse

__all__ = ["STREAMS", "BLOCK_ROWS", "streams", "bad_pixel_mask", "to_stored", "make_frames", "make_dark"]

#: Role → index of the SeedSequence child used for it.
STREAMS = {"perturb": 0, "bad_pixels": 1, "dark_pattern": 2, "frames": 3, "dark_frames": 4}
#: Rows per noise block.
BLOCK_ROWS = 64


def streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """The independent seed sequences of :data:`STREAMS` for ``seed``."""
    children = np.random.SeedSequence(int(seed)).spawn(len(STREAMS))
    return {name: children[index] for name, index in STREAMS.items()}


def bad_pixel_mask(shape: tuple[int, int], fraction: float, seed_sequence: np.random.SeedSequence) -> np.ndarray | None:
    """Bad pixels: K ~ Binomial(N, fraction) distinct pixels drawn uniformly; None when ``fraction`` is 0."""
    if fraction <= 0:
        return None
    rng = np.random.default_rng(seed_sequence)
    n = shape[0] * shape[1]
    count = int(rng.binomial(n, fraction))
    mask = np.zeros(shape, dtype=bool)
    mask.ravel()[rng.choice(n, size=count, replace=False)] = True
    return mask


def to_stored(values: np.ndarray, response: DetectorResponse) -> np.ndarray:
    """Round (integer dtypes), clip to [0, saturation] and cast ``values`` (float64, modified in place)."""
    dtype = np.dtype(response.dtype)
    if dtype.kind in "iu":
        np.rint(values, out=values)
    np.clip(values, 0.0, response.clip_max, out=values)
    return values.astype(dtype)


def _dark_map_blocks(shape, response: DetectorResponse, seed_sequence):
    """Yield (row slice, dark map block) for the whole image; the same values on every call."""
    rng = np.random.default_rng(seed_sequence) if response.dark_noise_counts > 0 else None
    for start in range(0, shape[0], BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, shape[0]))
        block_shape = (rows.stop - rows.start, shape[1])
        if response.dark_counts is None:
            yield rows, None
        elif rng is None:
            yield rows, np.full(block_shape, float(response.dark_counts))
        else:
            yield rows, response.dark_counts + rng.normal(0.0, response.dark_noise_counts, block_shape)


def _apply_sentinels(frame: np.ndarray, response: DetectorResponse, gap_mask, bad_mask) -> None:
    if gap_mask is not None:
        frame[gap_mask] = response.gap_value
    if bad_mask is not None:
        frame[bad_mask] = response.bad_pixel_value


def make_frames(expected: np.ndarray, response: DetectorResponse, seeds: dict, gap_mask=None,
                bad_mask=None) -> np.ndarray:
    """Frames ``(n_frames, NZ, NY)`` in ``response.dtype`` from the expected counts of one frame.

    Parameters
    ----------
    expected : ndarray of float64, shape (NZ, NY)
        Noise-free counts (rings + background), without dark.
    response : DetectorResponse
    seeds : dict
        :func:`streams` of the configuration's seed.
    gap_mask, bad_mask : ndarray of bool, optional
        Pixels set to the gap / bad-pixel value.
    """
    shape = expected.shape
    out = np.empty((response.n_frames, *shape), dtype=np.dtype(response.dtype))
    rng = np.random.default_rng(seeds["frames"])
    for f in range(response.n_frames):
        for rows, dark in _dark_map_blocks(shape, response, seeds["dark_pattern"]):
            lam = expected[rows]
            values = rng.poisson(lam).astype(np.float64) if response.poisson else lam.copy()
            if dark is not None:
                values += dark
            if response.read_noise_counts > 0:
                values += rng.normal(0.0, response.read_noise_counts, values.shape)
            out[f, rows] = to_stored(values, response)
        _apply_sentinels(out[f], response, gap_mask, bad_mask)
    return out


def make_dark(shape: tuple[int, int], response: DetectorResponse, seeds: dict, gap_mask=None,
              bad_mask=None) -> np.ndarray | None:
    """One dark frame ``(1, NZ, NY)`` (dark map + read noise), or None without ``response.dark_counts``."""
    if response.dark_counts is None:
        return None
    out = np.empty((1, *shape), dtype=np.dtype(response.dtype))
    rng = np.random.default_rng(seeds["dark_frames"])
    for rows, dark in _dark_map_blocks(shape, response, seeds["dark_pattern"]):
        if response.read_noise_counts > 0:
            dark = dark + rng.normal(0.0, response.read_noise_counts, dark.shape)
        out[0, rows] = to_stored(dark, response)
    _apply_sentinels(out[0], response, gap_mask, bad_mask)
    return out
