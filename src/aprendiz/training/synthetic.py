"""A generated credit-default table: the shape real binary tabular data has (numbers and
categories, missing values, a few percent positives), made here so no test or benchmark
downloads anything.

Columns: ``customer_id`` (an id, left out by the inferred schema), ``age`` (int), ``income``
(float, about 8 % missing), ``balance`` (float), ``student`` (``No`` / ``Yes``), ``plan``
(``basic`` / ``plus`` / ``gold``, about 5 % missing), ``region`` (five levels), and ``default``
(``No`` / ``Yes``, the label). Default grows with the balance against income, for students and
the basic plan; ``positive_rate`` sets the share of ``Yes``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LABELS = ("No", "Yes")
LABEL_COLUMN = "default"
PLANS = ("basic", "plus", "gold")
REGIONS = ("north", "south", "east", "west", "centre")


def credit_frame(rows: int, *, positive_rate: float = 0.03, seed: int = 0) -> pd.DataFrame:
    """``rows`` customers, about ``positive_rate`` of them defaulting (label ``Yes``)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    income = np.round(rng.lognormal(10.3, 0.5, rows), 2)
    balance = np.round(rng.gamma(2.0, 800.0, rows), 2)
    student = rng.random(rows) < 0.2
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(REGIONS, rows)
    risk = (3.0 * balance / income * 10 + 1.2 * student + 0.8 * (plan == "basic") - 0.6 * (plan == "gold")
            - 0.02 * (age - 18) + rng.normal(0, 0.5, rows))
    cut = np.quantile(risk, 1 - positive_rate)
    frame = pd.DataFrame({
        "customer_id": np.arange(100_000, 100_000 + rows),
        "age": age,
        "income": income,
        "balance": balance,
        "student": np.where(student, "Yes", "No"),
        "plan": plan.astype(object),
        "region": region,
        LABEL_COLUMN: np.where(risk >= cut, LABELS[1], LABELS[0]),
    })
    frame.loc[rng.random(rows) < 0.08, "income"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "plan"] = None
    return frame


def credit_csv(rows: int, *, positive_rate: float = 0.03, seed: int = 0) -> bytes:
    """The table as CSV (a missing value is an empty cell)."""
    return credit_frame(rows, positive_rate=positive_rate, seed=seed).to_csv(index=False).encode()


TRAINING_YAML = f"label_column: {LABEL_COLUMN}\nlabels: [{LABELS[0]}, {LABELS[1]}]\n"
