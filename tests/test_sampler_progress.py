"""Progress reporting from inside the compiled loop: it reports, and it changes no draw."""

from __future__ import annotations

import numpy as np

import scalebayes as sb
from scalebayes import progress


def test_progress_reports_and_changes_no_draw(chinchilla_data, capsys):
    """Same seed, same numbers with and without the progress callback compiled in; with it, stderr gets plain lines
    (not a terminal under pytest) up to the last iteration."""
    kw = dict(seed=5, chains=2, warmup=150, draws=100, warn=False, pointwise=False)
    off = sb.fit(chinchilla_data, progress=False, **kw)
    capsys.readouterr()
    on = sb.fit(chinchilla_data, progress=True, **kw)
    err = capsys.readouterr().err
    assert "warm-up" in err and "250/250 sampling" in err, err
    for name in ("E", "alpha", "beta", "sigma", "nu"):
        np.testing.assert_array_equal(on.draws(name), off.draws(name))
    np.testing.assert_array_equal(on.idata["sample_stats"]["energy"], off.idata["sample_stats"]["energy"])


def test_progress_line_and_auto_mode():
    line = progress.format_line(50, 200, "warm-up", 10.0)
    assert "25%" in line and "50/200 warm-up" in line and "ETA 30s" in line
    assert "datasets 3/8" in progress.format_line(3, 8, "sampling", 1.0, (3, 8))
    assert progress.enabled(False) is False and progress.enabled(True) is True
    assert progress.enabled(None) is False  # pytest captures stderr: not a terminal, not a notebook
