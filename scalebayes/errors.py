"""Every exception and warning scalebayes raises on purpose, in one place.

Catch :class:`ScaleBayesError` to catch anything of ours; the specific classes subclass the matching builtin
(``ValueError``, ``KeyError``) so code that already catches those keeps working.
"""

from __future__ import annotations


class ScaleBayesError(Exception):
    """Base class of every error scalebayes raises deliberately."""


class DataError(ScaleBayesError, ValueError):
    """The runs table is unusable as given: a missing column, a bad value, too few rows...

    ``column`` names the offending column (or ``None`` when the problem is not one column's) and ``rows`` the
    offending row labels of the input DataFrame, so the message can be acted on without re-reading the file.
    """

    def __init__(self, message: str, *, column: str | None = None, rows: list | None = None):
        self.column = column
        self.rows = list(rows) if rows is not None else []
        if rows is not None and len(rows):
            shown = ", ".join(str(r) for r in list(rows)[:20])
            more = f" (and {len(rows) - 20} more)" if len(rows) > 20 else ""
            message = f"{message} [rows: {shown}{more}]"
        super().__init__(message)


class UnknownNameError(ScaleBayesError, KeyError):
    """A law, dataset, family, likelihood or parameter name that scalebayes does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ModelError(ScaleBayesError, ValueError):
    """A model specification that cannot be fitted (bad priors, pooling options, law/data mismatch)."""


class OutputError(ScaleBayesError, OSError):
    """An output folder or file that cannot be written: not writable, not a folder, or in use by another run."""


class DependencyError(ScaleBayesError, ImportError):
    """An optional package that a requested feature needs is missing or too old (the message says which)."""


class DataWarning(UserWarning):
    """The runs table is usable but looks wrong (for example sizes in millions instead of raw counts)."""


class SamplingWarning(UserWarning):
    """The sampler's diagnostics failed (R-hat, ESS or divergences): the posterior should not be trusted as is."""


class LargeFitWarning(UserWarning):
    """A fit about to start is large (many families or runs): it may run for minutes to hours. The message gives a
    rough estimate of the work and how to try a smaller fit first."""


class NotCalibratedError(ModelError):
    """A question needs a calibrated posterior (``extrapolation="discrepancy"``) and this one has no calibration:
    call ``scalebayes.calibrate(post)`` first. Predicting never fits."""


class MisfitWarning(UserWarning):
    """The fitted law leaves structure in its residuals (trends with N, D, C or family): see
    :mod:`scalebayes.misfit`."""


class CalibrationWarning(UserWarning):
    """Some inner refits of a calibration did not converge and were left out of it, or none could be made and the
    discrepancy is its prior's."""


class PriorDominatedWarning(UserWarning):
    """The runs barely pin some parameter: its posterior is about as wide as its prior, so its value (and any
    prediction that depends on it) comes from the prior; see :mod:`scalebayes.identification`."""
