"""The one padding rule: how many rows an array of ``n`` runs (or datasets) is padded to.

JAX compiles one program per array shape, so every fit pads its runs with masked rows to a size from a short list:
adding a run or two then reuses the compiled program. The list is the multiples of 8 up to 128, then eight sizes per
doubling (136 is not one: 144, 160, ..., 256, 288, ...), so padding costs at most 12.5% more work per leapfrog step
(1/8 beyond the first 128) and a dataset's size changes the program only at those steps. ``fit``, ``fit_many``, SBC,
backtests and refits all use it, so fits of nearby sizes share programs. Pure NumPy, no package imports.
"""

from __future__ import annotations

import numpy as np

#: The smallest step between padded sizes (a multiple of the 8 float32 / 4 float64 lanes of a CPU vector).
MIN_STEP = 8


def pad_size(n: int) -> int:
    """Padded length for ``n`` rows: ``n`` rounded up to a multiple of max(8, 2^(⌊log2 n⌋ − 3)); at least 8.

    E.g. 40 → 40, 45 → 48, 240 → 240, 565 → 576, 100,000 → 102,400 (at most 12.5% over ``n``).
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"cannot pad to a negative size: {n}")
    step = max(MIN_STEP, 1 << max(0, n.bit_length() - 4))
    return max(MIN_STEP, -(-n // step) * step)


def pad(a, n: int, fill, dtype=None) -> np.ndarray:
    """``a`` (length m ≤ n along its first axis) extended to length ``n`` with rows of ``fill``."""
    a = np.asarray(a, dtype=dtype)
    m = a.shape[0]
    if m > n:
        raise ValueError(f"cannot pad {m} rows to {n}")
    tail = np.full((n - m, *a.shape[1:]), fill, dtype=a.dtype)
    return np.concatenate([a, tail])
