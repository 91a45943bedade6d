"""Validation of the runs table: every bad input raises DataError naming the column and rows; nothing is dropped
silently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scalebayes as sb
from scalebayes.errors import DataError, UnknownNameError


def frame(n=8):
    N = np.geomspace(1e7, 1e9, n)
    D = 20 * N
    return pd.DataFrame({"params": N, "tokens": D, "flops": 6 * N * D, "loss": np.linspace(4, 3, n), "fam": "x"})


def test_two_of_three_derive_the_third():
    df = frame()
    a = sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
    b = sb.ScalingData.from_frame(df, N="params", C="flops", loss="loss")
    c = sb.ScalingData.from_frame(df, D="tokens", C="flops", loss="loss")
    for d in (b, c):
        np.testing.assert_allclose(d.N, a.N, rtol=1e-12)
        np.testing.assert_allclose(d.D, a.D, rtol=1e-12)
        np.testing.assert_allclose(d.C, a.C, rtol=1e-12)
    assert a.families == ("all",)


def test_only_one_of_ndc_raises():
    with pytest.raises(DataError, match="two of N, D, C"):
        sb.ScalingData.from_frame(frame(), N="params", loss="loss")


def test_missing_column_named():
    with pytest.raises(DataError, match="'tokenz'") as e:
        sb.ScalingData.from_frame(frame(), N="params", D="tokenz", loss="loss")
    assert e.value.column == "tokenz"
    with pytest.raises(DataError, match="'famz'"):
        sb.ScalingData.from_frame(frame(), N="params", D="tokens", loss="loss", family="famz")


def test_non_numeric_named_with_rows():
    df = frame().astype({"loss": object})
    df.loc[3, "loss"] = "n/a"
    with pytest.raises(DataError, match="non-numeric") as e:
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
    assert e.value.column == "loss" and e.value.rows == [3]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_raise(bad):
    df = frame()
    df.loc[2, "loss"] = bad
    with pytest.raises(DataError) as e:
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
    assert e.value.column == "loss" and e.value.rows == [2]


@pytest.mark.parametrize("col", ["params", "tokens", "flops", "loss"])
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_raise(col, bad):
    df = frame()
    df.loc[5, col] = bad
    kw = dict(N="params", D="tokens", loss="loss") if col != "flops" else dict(N="params", C="flops", loss="loss")
    with pytest.raises(DataError, match="> 0") as e:
        sb.ScalingData.from_frame(df, **kw)
    assert e.value.column == col and e.value.rows == [5]


def test_c_inconsistent_with_6nd():
    df = frame()
    df.loc[1, "flops"] *= 1.5
    with pytest.raises(DataError, match="6·N·D") as e:
        sb.ScalingData.from_frame(df, N="params", D="tokens", C="flops", loss="loss")
    assert e.value.rows == [1]
    # Within tolerance, and with the check switched off, it loads (and keeps the given C).
    df.loc[1, "flops"] = 6 * df.loc[1, "params"] * df.loc[1, "tokens"] * 1.01
    d = sb.ScalingData.from_frame(df, N="params", D="tokens", C="flops", loss="loss")
    assert d.C[1] == df.loc[1, "flops"]
    df.loc[1, "flops"] *= 2
    sb.ScalingData.from_frame(df, N="params", D="tokens", C="flops", loss="loss", c_rtol=None)


def test_duplicates_raise_naming_both_rows():
    df = pd.concat([frame(), frame().iloc[[4]]], ignore_index=True)
    with pytest.raises(DataError, match="duplicate") as e:
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
    assert e.value.rows == [4, 8]


def test_empty_family_label():
    df = frame()
    df.loc[6, "fam"] = "  "
    with pytest.raises(DataError, match="empty") as e:
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss", family="fam")
    assert e.value.column == "fam" and e.value.rows == [6]


def test_dropna_reports_what_it_dropped():
    df = frame()
    df.loc[[2, 5], "loss"] = np.nan
    with pytest.raises(DataError, match="dropna=True"):
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
    with pytest.warns(UserWarning, match=r"\[2, 5\]"):
        d = sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss", dropna=True)
    assert len(d) == 6 and list(d.excluded.index) == [2, 5]
    assert set(d.excluded["reason"]) == {"missing value (dropna=True)"}


def test_too_few_rows_for_law():
    d = sb.ScalingData.from_frame(frame(5), N="params", D="tokens", loss="loss")
    with pytest.raises(DataError, match="5 runs cannot constrain"):
        sb.fit(d)


def test_from_csv_and_missing_file(tmp_path):
    p = tmp_path / "runs.csv"
    frame().to_csv(p, index=False)
    d = sb.ScalingData.from_csv(p, N="params", D="tokens", loss="loss", family="fam")
    assert len(d) == 8 and d.name == "runs"
    with pytest.raises(DataError, match="not found"):
        sb.ScalingData.from_csv(tmp_path / "nope.csv", N="params", D="tokens", loss="loss")


def test_unknown_names():
    with pytest.raises(UnknownNameError, match="unknown dataset"):
        sb.datasets.load("nope")
    with pytest.raises(UnknownNameError, match="unknown law"):
        sb.fit(sb.datasets.load("chinchilla_epoch"), law="nope")
    d = sb.ScalingData.from_frame(frame(), N="params", D="tokens", loss="loss", family="fam")
    with pytest.raises(UnknownNameError, match="unknown famil"):
        d.select_families(["y"])


def test_chinchilla_dataset():
    full = sb.datasets.load("chinchilla_epoch", exclude_outliers=False)
    d = sb.datasets.load("chinchilla_epoch")
    assert len(full) == 245 and len(d) == 240 and len(d.excluded) == 5
    # The excluded runs are exactly the five highest losses, and none of the kept runs is higher.
    assert d.excluded["loss"].min() > d.loss.max()
    assert "Besiroglu" in sb.datasets.source("chinchilla_epoch")


def test_porian_dataset_reports_dropped_rows():
    d = sb.datasets.load("porian_isoflop")
    assert len(d) == 940 and len(d.families) == 8
    with pytest.warns(UserWarning, match="dropped 3 row"):
        k = sb.datasets.load("porian_isoflop", param_count="kaplan", split="train")
    assert len(k.excluded) == 3
    with pytest.raises(UnknownNameError):
        sb.datasets.load("porian_isoflop", param_count="bogus")


# ---------------------------------------------------------------------------------------------------- labels are text
def test_family_labels_are_text_as_written(tmp_path):
    """`01` and `1` are two families, `1` stays "1", and a family called NA is a family, not a missing value."""
    df = frame(8).drop(columns="fam")
    path = tmp_path / "runs.csv"
    body = df.to_csv(index=False).splitlines()
    labels = ["01", "1", "NA", "1", "01", "NA", "1.0", "1"]
    path.write_text("\n".join([body[0] + ",fam", *(f"{r},{f}" for r, f in zip(body[1:], labels, strict=True))]))
    d = sb.ScalingData.from_csv(path, N="params", D="tokens", loss="loss", family="fam")
    assert d.families == ("01", "1", "NA", "1.0")
    assert list(d.family_counts()) == [2, 3, 2, 1]
    # an empty cell is still a missing label
    path.write_text(path.read_text().replace(",NA\n", ",\n", 1))
    with pytest.raises(DataError, match="missing") as e:
        sb.ScalingData.from_csv(path, N="params", D="tokens", loss="loss", family="fam")
    assert e.value.column == "fam" and e.value.rows == [2]


def test_whole_number_family_labels_from_a_frame_keep_their_spelling():
    df = frame(8)
    df["fam"] = [1.0, 2.0, 1.0, 2.0, np.nan, 1.0, 2.0, 1.0]  # a float column only because of the gap
    d = sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss", family="fam", dropna=True)
    assert d.families == ("1", "2")


# ---------------------------------------------------------------------------------------------------- plausibility
def test_derived_compute_that_overflows_names_the_rows():
    df = frame()
    df.loc[3, "params"] = 1e300
    with pytest.raises(DataError, match="overflows") as e:
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
    assert e.value.rows == [3] and "params" in str(e.value)


@pytest.mark.parametrize(
    ("role", "scale", "words"),
    [("N", 1e-6, "millions or billions"), ("D", 1e-9, "millions or billions"), ("C", 1e-20, "FLOP")],
)
def test_sizes_in_scaled_units_are_warned_naming_the_column(role, scale, words):
    df = frame()
    col = {"N": "params", "D": "tokens", "C": "flops"}[role]
    df[col] *= scale
    kw = {"N": "params", "D": "tokens", "C": "flops", "loss": "loss"}
    kw.pop({"N": "D", "D": "N", "C": "D"}[role])
    with pytest.warns(UserWarning, match=words) as w:
        sb.ScalingData.from_frame(df, c_rtol=None, **kw)
    assert any(f"'{col}'" in str(m.message) for m in w)


@pytest.mark.parametrize("role", ["N", "D", "loss"])
def test_a_true_false_column_is_not_a_number(role):
    df = frame()
    df["flag"] = True
    kw = {"N": "params", "D": "tokens", "loss": "loss", role: "flag"}
    with pytest.raises(DataError, match="true/false") as e:
        sb.ScalingData.from_frame(df, **kw)
    assert e.value.column == "flag"


@pytest.mark.parametrize(
    "kw",
    [
        dict(N="params", D="params", loss="loss"),
        dict(N="params", D="tokens", loss="tokens"),
        dict(N="params", C="params", loss="loss"),
    ],
)
def test_one_column_cannot_play_two_roles(kw):
    with pytest.raises(DataError, match="same column") as e:
        sb.ScalingData.from_frame(frame(), **kw)
    assert e.value.column in ("params", "tokens")


def test_unique_tokens_may_be_the_tokens_column():
    d = sb.ScalingData.from_frame(frame(), N="params", D="tokens", U="tokens", loss="loss")
    np.testing.assert_array_equal(d.U, d.D)


def test_absurd_losses_are_rejected_or_warned_naming_the_rows():
    df = frame()
    df.loc[[1, 4], "loss"] = [2e3, 1.5e5]  # a perplexity and a token count mistaken for losses
    with pytest.raises(DataError, match="nats") as e:
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
    assert e.value.column == "loss" and e.value.rows == [1, 4]
    df.loc[[1, 4], "loss"] = [45.0, 30.0]  # possible only far from a law's floor: warned
    with pytest.warns(UserWarning, match=r"'loss' \(loss\) has values above 23 nats/token.*rows 1, 4"):
        sb.ScalingData.from_frame(df, N="params", D="tokens", loss="loss")
