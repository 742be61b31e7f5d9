"""aprendiz.training.es_or_en: the rule that labelled the shipped es-or-en dataset."""

from __future__ import annotations

import csv
from importlib.resources import files

import numpy as np
import pytest

from aprendiz.training.es_or_en import labelled_corpus, language_of

# -- the labelling rule and the data ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("¿Cuál es la capital de Bolivia?", 1),
        ("Hola", 1),
        ("Me llamo Carlos", 1),
        ("The capital of Colombia is Bogotá.", 0),
        ("The constitutional capital of Bolivia is Sucre, and the government sits in La Paz.", 0),
        ("Where is Medellín?", 0),
        ("Hello", 0),
        ("Holaa", None),
        ("2 + 2", None),
        ("", None),
    ],
)
def test_labelling_rule(text, label):
    assert language_of(text) == label


def test_labelled_corpus_is_balanced_and_distinct():
    texts, labels = labelled_corpus()
    assert len(texts) == len(set(texts)) == len(labels) > 700
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}
    assert 0.4 < labels.mean() < 0.6


def test_the_shipped_dataset_carries_the_rules_labels():
    with files("aprendiz.training").joinpath("datasets/es_or_en.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 400 and {r["label"] for r in rows} == {"0", "1"}
    assert all(language_of(r["text"]) == int(r["label"]) for r in rows)
