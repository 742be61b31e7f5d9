"""What a dataset in the store is, before any training: ``aprendiz datasets describe``.

It reads ``datasets/<name>/`` and ``feedback/<name>/`` exactly as a training run would (the same
training.yaml, kept schema and label names), and says what the run would see: the schema, the
label balance, the missing values per column, and the rows it would quarantine, and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from aprendiz.registry import Feature, ModelRegistry
from aprendiz.store import ObjectStore
from aprendiz.training.config import TrainingConfig, load_schema, run_labels
from aprendiz.training.dataset import NA_TEXTS, load_dataset, read_sources

if TYPE_CHECKING:
    import pandas as pd

QUARANTINE_SHOWN = 10


@dataclass
class DatasetDescription:
    name: str
    sources: list[str]
    ignored_files: list[str]
    schema_source: str  # config, schema.json or inferred
    features: list[Feature]
    text_column: str | None
    label_column: str
    labels: tuple[str, str]
    label_counts: dict[str, int]  # label name -> rows, after quarantine and deduplication
    rows_read: int
    rows_used: int
    rows_quarantined: int
    duplicates_dropped: int
    feedback_read: int
    left_out: dict[str, str] = field(default_factory=dict)  # columns the inferred schema leaves out, and why
    missing: dict[str, int] = field(default_factory=dict)  # column -> empty cells in the data files
    quarantine: list[dict[str, Any]] = field(default_factory=list)  # the first QUARANTINE_SHOWN
    image: Any = None  # an image dataset's transform (aprendiz.images.ImageTransform)
    unlabelled: int = 0  # an image dataset's images without a label

    @property
    def positive_rate(self) -> float:
        return self.label_counts[self.labels[1]] / max(self.rows_used, 1)


def describe_dataset(store: ObjectStore, name: str) -> DatasetDescription:
    """The dataset as a training run of ``name`` would read it (DatasetError when it could not)."""
    registry = ModelRegistry(store)
    config = TrainingConfig.load(store, name)
    champion = registry.champion(name)
    card = registry.card(name, champion.version) if champion else None
    labels = run_labels(config, card)
    from aprendiz.training.images import is_image_dataset, load_image_dataset

    if is_image_dataset(store, name):
        images = load_image_dataset(store, name, config.image, labels, config.label_column)
        return DatasetDescription(
            name=name, sources=images.sources, ignored_files=[], schema_source="images", features=[], text_column=None,
            label_column="the folder (or labels.csv)", labels=labels,
            label_counts={labels[0]: int(np.sum(images.y == 0)), labels[1]: int(np.sum(images.y == 1))},
            rows_read=images.rows_read, rows_used=len(images.y), rows_quarantined=images.rows_quarantined,
            duplicates_dropped=images.duplicates_dropped, feedback_read=images.feedback_read,
            quarantine=images.quarantine[:QUARANTINE_SHOWN], image=config.image, unlabelled=len(images.unlabelled),
        )
    dataset = load_dataset(store, name, config, kept_schema=load_schema(store, name), labels=labels)
    sources, _ = read_sources(store, name)
    return DatasetDescription(
        name=name, sources=dataset.sources, ignored_files=dataset.ignored_files, schema_source=dataset.schema_source,
        features=dataset.features, text_column=dataset.text_column, label_column=dataset.label_column,
        labels=labels, label_counts={labels[0]: int(np.sum(dataset.y == 0)), labels[1]: int(np.sum(dataset.y == 1))},
        rows_read=dataset.rows_read, rows_used=len(dataset.y), rows_quarantined=dataset.rows_quarantined,
        duplicates_dropped=dataset.duplicates_dropped, feedback_read=dataset.feedback_read, left_out=dataset.left_out,
        missing=_missing(source.frame for source in sources), quarantine=dataset.quarantine[:QUARANTINE_SHOWN],
    )


def _missing(frames: Iterable[pd.DataFrame]) -> dict[str, int]:
    """Missing cells per column over the data files (blank, NaN, null, or an NA marker such as "NA")."""
    counts: dict[str, int] = {}
    for frame in frames:
        for column in frame.columns:
            values = frame[column]
            text = values.astype(str).str.strip()
            empty = values.isna() | text.eq("") | text.isin(NA_TEXTS)
            counts[str(column)] = counts.get(str(column), 0) + int(empty.sum())
    return counts


def _feature_kind(feature: Feature) -> str:
    """A schema line's type: ``float``, ``int`` or ``category [a, b, c]``, then ``may be missing``."""
    kind: str = feature.type
    if feature.type == "category":
        levels = feature.levels or []
        kind += f" [{', '.join(levels[:8])}{', ...' if len(levels) > 8 else ''}] ({len(levels)} levels"
        kind += ", unseen values refused)" if feature.unseen == "refuse" else ")"
    return kind + ("; may be missing" if feature.missing else "")


def format_description(d: DatasetDescription) -> str:
    """The description as the command prints it."""
    what = "images and feedback records" if d.image is not None else f"rows from {len(d.sources)} file(s)"
    lines = [f"dataset {d.name}: {d.rows_read} {what} read ({', '.join(d.sources)}); feedback records {d.feedback_read}"]
    if d.ignored_files:
        lines.append(f"  ignored (not CSV, Parquet or JSON Lines): {', '.join(d.ignored_files)}")
    if d.image is not None:
        lines.append(f"images: transform {d.image.model_dump()} -> float32 {list(d.image.shape)} per image; "
                     f"{d.unlabelled} unlabelled (the semi-supervised GAN learns from them)")
    elif d.text_column is not None:
        lines.append(f"text column: {d.text_column}")
    else:
        lines.append(f"schema ({d.schema_source}), {len(d.features)} features:")
        lines += [f"  {f.name:<32} {_feature_kind(f)}" for f in d.features]
        lines += [f"  {column:<32} left out: {why}" for column, why in d.left_out.items()]
    balance = ", ".join(f"{label}: {count}" for label, count in d.label_counts.items())
    lines.append(f"labels ({d.label_column}): {balance}; positive rate {d.positive_rate:.1%}")
    if d.image is None:
        lines.append("missing values: " + (", ".join(f"{c}: {n}" for c, n in d.missing.items() if n) or "none"))
    lines.append(f"rows used: {d.rows_used}; duplicates dropped: {d.duplicates_dropped}; quarantined: {d.rows_quarantined}")
    for entry in d.quarantine:
        lines.append(f"  {entry.get('source')} line {entry.get('line')}: {entry.get('reason')}")
    if d.rows_quarantined > len(d.quarantine):
        lines.append(f"  ... and {d.rows_quarantined - len(d.quarantine)} more")
    return "\n".join(lines)
