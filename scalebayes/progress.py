"""Progress of a running fit: one bar on stderr (a terminal), plain lines elsewhere (notebooks, logs).

A single fit's host loop (:mod:`scalebayes.sampler.driver`) calls :func:`update` between its compiled pieces,
every 10% of the iterations (where the slowest chain passes each 10%; no chain waits for it); the batch and sharded
programs call it from inside their loop through a host callback, compiled in only when ``SamplerConfig.progress``
asks. A fit's bar starts at its first report and ends at its
last; concurrent fits (``fit_many``'s worker threads) share one line.
"""

from __future__ import annotations

import sys
import threading
import time

_LOCK = threading.Lock()
_STATE: dict = {}
_WIDTH = 30


def enabled(progress: bool | None, stream=None) -> bool:
    """``progress`` resolved: ``None`` (auto) is on when ``stream`` (default stderr) is a terminal or the process is
    a notebook kernel; a closed or replaced stream without ``isatty`` counts as no terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        tty = False
    return tty or "ipykernel" in sys.modules


def format_line(done: int, total: int, phase: str, elapsed: float, datasets: tuple[int, int] | None = None) -> str:
    """One progress line: bar, iterations done/total per chain, phase, datasets finished, elapsed and ETA (s)."""
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
    bar = "#" * int(round(frac * _WIDTH))
    eta = elapsed * (1.0 - frac) / frac if frac > 0 else float("nan")
    sets = f" datasets {datasets[0]}/{datasets[1]}" if datasets else ""
    return f"[{bar:<{_WIDTH}}] {100 * frac:3.0f}% {done}/{total} {phase}{sets} {elapsed:.0f}s, ETA {eta:.0f}s"


def update(done, total, sampling, finished=-1, n_datasets=-1) -> None:
    """Host callback of the compiled loop: ``done`` of ``total`` iterations per chain (the slowest chain's count),
    ``sampling`` (else warm-up; or the phase's name, e.g. ``"sampling on"``), and for the batch program ``finished``
    of ``n_datasets`` datasets."""
    done, total, finished, n_datasets = int(done), int(total), int(finished), int(n_datasets)
    phase = sampling if isinstance(sampling, str) else ("sampling" if bool(sampling) else "warm-up")
    with _LOCK:
        now = time.perf_counter()
        if not _STATE or done < _STATE["done"] or _STATE.get("closed"):
            _STATE.clear()
            _STATE.update(start=now, done=0, closed=False, printed=-1)
        _STATE["done"] = done
        datasets = (finished, n_datasets) if n_datasets >= 0 else None
        line = format_line(done, total, phase, now - _STATE["start"], datasets)
        last = done >= total and (n_datasets < 0 or finished >= n_datasets)
        _emit(line, done * 10 // max(total, 1), last)
        _STATE["closed"] = last


def _emit(line: str, decile: int, last: bool) -> None:
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        stream.write("\r" + line + ("\n" if last else ""))
    elif decile > _STATE["printed"] or last:  # plain lines, one per 10%
        _STATE["printed"] = decile
        stream.write(line + "\n")
    stream.flush()


class Steps:
    """Progress of a job made of several fits (``calibrate``, ``backtest``, ``sbc``): one line per finished step
    (``what: [###   ] 40% 2/5 fits, <phase> 12s, ETA 18s``), on stderr when :func:`enabled`; each fit inside may
    draw its own sampler bar (its iterations) between these lines. ``total`` counts the steps planned."""

    def __init__(self, what: str, total: int, progress: bool | None, unit: str = "fits"):
        self.what, self.total, self.unit = what, int(total), unit
        self.on = enabled(progress)
        self.done = 0
        self.start = time.perf_counter()

    def advance(self, phase: str = "", n: int = 1) -> str:
        """``n`` more steps finished (``phase`` says which); returns the line (written to stderr when on)."""
        self.done += int(n)
        elapsed = time.perf_counter() - self.start
        line = f"{self.what}: " + format_line(
            self.done, self.total, f"{self.unit}{', ' + phase if phase else ''}", elapsed
        )
        if self.on:
            with _LOCK:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        return line
