"""The training job's data: read, validate, quarantine, merge feedback, split.

Sources. Every object directly or deeper under ``datasets/<name>/`` whose name ends in
``.csv``, ``.parquet``/``.pq`` or ``.jsonl``/``.ndjson`` is read, in key order (other files,
``training.yaml``, ``schema.json`` and the ``quarantine/`` folder are not data). CSV cells are
read as text and parsed here, so one bad cell never spoils a column.

Validation. A row is kept when its label is 0, 1 or one of the two label names, and every
schema feature holds a finite number (an integer for ``int`` features). Anything else goes to
quarantine with every reason found ("missing label", "feature 'x': 'abc' is not a number",
"feature 'x': inf is not finite", ...). Columns not in the schema are ignored.

Feedback. Every tabular :class:`~aprendiz.registry.FeedbackRecord` under ``feedback/<name>/`` is
validated the same way and appended to the pool *before* the split (so feedback rows land in
train, validation and test alike). Duplicates are then removed by their feature values (as the
model sees them: float32), keeping the LAST occurrence: dataset files first in key order, then
feedback in the order the store lists it (file names are UTC timestamps, so oldest first).
Hence a feedback example that corrects a label wins over the dataset row with the same
features, and a later feedback wins over an earlier one. Text feedback is quarantined.

Text datasets. A dataset whose only column besides the label holds text (and no schema is
declared) is a text dataset: ``x`` holds the texts (object [N]), ``text_column`` names the
column, text feedback joins the pool (tabular feedback is quarantined) and duplicates are
removed by text. The job trains it with :mod:`aprendiz.training.text_candidates`.

Split. Stratified train / validation / test with the configured fractions and seed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from aprendiz.columns import category_text, one_hot, spans, width
from aprendiz.images import ImageTransform
from aprendiz.registry import MAX_LEVELS, Feature, FeedbackRecord, dataset_prefix, feedback_lines
from aprendiz.store import ObjectStore, jsonable
from aprendiz.training.config import CONFIG_FILE, SCHEMA_FILE, TrainingConfig

QUARANTINE_FOLDER = "quarantine/"
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
MIN_PER_CLASS = 5

_OK, _MISSING, _WRONG, _NONFINITE, _OUT_OF_RANGE = 0, 1, 2, 3, 4
FLOAT32_MAX = float(np.finfo(np.float32).max)  # models compute in float32: beyond it a value is infinite
# Cells that mean "no value" (the markers R, pandas and spreadsheets write), besides an empty one.
NA_TEXTS = frozenset({"NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "#N/A"})


class DatasetError(ValueError):
    """The data cannot be trained on (no rows, too few rows, one class, unusable columns)."""


class TextDatasetError(DatasetError):
    """The dataset is one text column: :func:`load_dataset` reads it as a text dataset."""

    def __init__(self, message: str, column: str = ""):
        super().__init__(message)
        self.column = column


@dataclass
class Dataset:
    """The validated pool (dataset rows and feedback, deduplicated) and what happened to the rest."""

    features: list[Feature]  # empty for a text dataset
    label_column: str
    x: np.ndarray  # float32 [N, F]; a text dataset: object [N] of str
    y: np.ndarray  # int64 [N]
    from_feedback: np.ndarray  # bool [N]
    sources: list[str]
    schema_source: str  # "config", "schema.json" or "inferred"
    rows_read: int = 0  # dataset rows + feedback records seen
    feedback_read: int = 0
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    duplicates_dropped: int = 0
    labels_corrected: int = 0  # dataset rows whose label a feedback row replaced
    ignored_files: list[str] = field(default_factory=list)
    text_column: str | None = None  # set for a text dataset (one text column)
    left_out: dict[str, str] = field(default_factory=dict)  # columns the inferred schema left out, and why
    image: ImageTransform | None = None  # set for an image dataset: x holds the encoded images (object [N] of bytes)
    unlabelled: list[bytes] = field(default_factory=list)  # an image dataset's images without a label

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def rows_used(self) -> int:
        return len(self.y)

    @property
    def rows_from_feedback(self) -> int:
        return int(self.from_feedback.sum())

    def fingerprint(self, seed: int) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([f.name for f in self.features]).encode())
        if self.text_column is not None:
            digest.update(json.dumps([self.text_column, [str(t) for t in self.x]], ensure_ascii=False).encode())
        elif self.image is not None:
            digest.update(self.image.model_dump_json().encode())
            for data in self.x:
                digest.update(hashlib.sha256(data).digest())
        else:
            digest.update(np.ascontiguousarray(self.x, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        digest.update(str(seed).encode())
        return digest.hexdigest()


class Pool(Protocol):
    """What a run records of the rows it trained on: a :class:`Dataset` in this process, or the
    sharded one of :mod:`aprendiz.training.distributed` that never is in one process."""

    features: list[Feature]
    text_column: str | None
    sources: list[str]
    schema_source: str
    rows_read: int
    quarantine: list[dict[str, Any]]
    duplicates_dropped: int
    labels_corrected: int
    left_out: dict[str, str]

    @property
    def rows_quarantined(self) -> int: ...

    @property
    def rows_used(self) -> int: ...

    @property
    def rows_from_feedback(self) -> int: ...

    def fingerprint(self, seed: int) -> str: ...


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


# -- reading ---------------------------------------------------------------------------------


@dataclass
class Source:
    key: str
    frame: pd.DataFrame  # raw values (strings for CSV)
    lines: np.ndarray  # line number (CSV, JSONL) or row number (Parquet) of each row
    bad: list[dict[str, Any]]  # rows that could not even be parsed


def data_keys(store: ObjectStore, name: str) -> tuple[list[str], list[str]]:
    prefix = dataset_prefix(name)
    keys, ignored = [], []
    for key in store.list(prefix):
        relative = key[len(prefix) :]
        if relative.startswith(QUARANTINE_FOLDER) or relative in (CONFIG_FILE, SCHEMA_FILE):
            continue
        if relative.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES):
            keys.append(key)
        else:
            ignored.append(key)
    return keys, ignored


def _read_csv(key: str, data: bytes) -> Source:
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        return Source(key, pd.DataFrame(), np.zeros(0, dtype=np.int64), [])
    header = [h.strip() for h in header]
    rows, lines, bad = [], [], []
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad.append(
                {
                    "source": key,
                    "line": reader.line_num,
                    "row": dict(zip(header, row)) | ({"_extra": row[len(header) :]} if len(row) > len(header) else {}),
                    "reason": f"the row has {len(row)} fields, the header {len(header)}",
                }
            )
            continue
        rows.append(row)
        lines.append(reader.line_num)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return Source(key, frame, np.asarray(lines, dtype=np.int64), bad)


def _read_jsonl(key: str, data: bytes) -> Source:
    records, lines, bad = [], [], []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append({"source": key, "line": number, "row": line[:1000], "reason": f"not valid JSON: {exc.msg}"})
            continue
        if not isinstance(record, dict):
            bad.append({"source": key, "line": number, "row": record, "reason": "not a JSON object"})
            continue
        records.append(record)
        lines.append(number)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return Source(key, frame.astype(object), np.asarray(lines, dtype=np.int64), bad)


def _read_parquet(key: str, data: bytes) -> Source:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises its own error types
        raise DatasetError(f"{key} is not a readable Parquet file: {exc}") from None
    return Source(key, frame, np.arange(1, len(frame) + 1, dtype=np.int64), [])


def read_sources(store: ObjectStore, name: str) -> tuple[list[Source], list[str]]:
    """Every data file of ``datasets/<name>/``, parsed into raw frames; and the files ignored."""
    keys, ignored = data_keys(store, name)
    sources = []
    for key in keys:
        data = store.read_bytes(key)
        lower = key.lower()
        if lower.endswith(CSV_SUFFIXES):
            sources.append(_read_csv(key, data))
        elif lower.endswith(PARQUET_SUFFIXES):
            sources.append(_read_parquet(key, data))
        else:
            sources.append(_read_jsonl(key, data))
    return sources, ignored


# -- parsing cells ---------------------------------------------------------------------------


def _parse_value(value: Any) -> tuple[float, int]:
    if value is None or value is pd.NA:
        return math.nan, _MISSING
    if isinstance(value, (bool, np.bool_)):
        return math.nan, _WRONG
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if math.isnan(number):
            return number, _MISSING  # a null in Parquet / JSON reads as NaN
        return number, _number_status(number)
    if isinstance(value, str):
        text = value.strip()
        if not text or text in NA_TEXTS:
            return math.nan, _MISSING
        try:
            number = float(text)
        except ValueError:
            return math.nan, _WRONG
        return number, _number_status(number)
    return math.nan, _WRONG


def _number_status(number: float) -> int:
    if not math.isfinite(number):
        return _NONFINITE
    return _OK if abs(number) <= FLOAT32_MAX else _OUT_OF_RANGE


def _parse_column(column: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a status per cell (_OK, _MISSING, _WRONG, _NONFINITE, _OUT_OF_RANGE)."""
    if column is None:
        return np.full(n, np.nan), np.full(n, _MISSING, dtype=np.int8)
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        status = np.select([np.isnan(values), ~np.isfinite(values), np.abs(values) > FLOAT32_MAX],
                           [_MISSING, _NONFINITE, _OUT_OF_RANGE], _OK).astype(np.int8)
        return values, status
    if pd.api.types.infer_dtype(column, skipna=True) == "string":
        # CSV cells: pandas parses the numbers at once; a cell it cannot (blank, an NA marker, text,
        # a form only Python's float reads) is parsed one by one below, so the result is the same.
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        status = np.select([~np.isfinite(values), np.abs(values) > FLOAT32_MAX],
                           [_NONFINITE, _OUT_OF_RANGE], _OK).astype(np.int8)
        unread = np.flatnonzero(np.isnan(values))
        cells = column.to_numpy(dtype=object)
        for i in unread:
            values[i], status[i] = _parse_value(cells[i])
        return values, status
    parsed = [_parse_value(v) for v in column.tolist()]
    values = np.fromiter((p[0] for p in parsed), dtype=np.float64, count=n)
    status = np.fromiter((p[1] for p in parsed), dtype=np.int8, count=n)
    return values, status


def _parse_labels(column: pd.Series | None, n: int, labels: tuple[str, str] | None) -> tuple[np.ndarray, list[str | None]]:
    """int64 labels (-1 when invalid) and a reason per row (None when valid)."""
    y = np.full(n, -1, dtype=np.int64)
    reasons: list[str | None] = [None] * n
    if column is None:
        return y, ["missing label (no label column)"] * n
    names = {name: index for index, name in enumerate(labels or ())}
    allowed = "0 or 1" + (f", {labels[0]!r} or {labels[1]!r}" if labels else "")
    for i, original in enumerate(column.tolist()):
        value = original
        if isinstance(value, str):
            text = value.strip()
            if text in names:
                y[i] = names[text]
                continue
            if not text:
                reasons[i] = "missing label"
                continue
            try:
                value = float(text)
            except ValueError:
                reasons[i] = f"label {original!r} is not {allowed}"
                continue
        if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value)):
            reasons[i] = "missing label"
        elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            reasons[i] = f"label {original!r} is not {allowed}"
        elif float(value) in (0.0, 1.0):
            y[i] = int(value)
        else:
            reasons[i] = f"label {original!r} is not {allowed}"
    return y, reasons


def _describe(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value.strip() if isinstance(value, str) else value)


def _parse_category(column: pd.Series | None, n: int) -> tuple[list[str | None], np.ndarray]:
    """Each cell as its level text (None when missing) and a status (_OK, _MISSING, _WRONG)."""
    if column is None:
        return [None] * n, np.full(n, _MISSING, dtype=np.int8)
    texts: list[str | None] = []
    status = np.empty(n, dtype=np.int8)
    for i, value in enumerate(column.tolist()):
        try:
            text = category_text(value)
        except ValueError:
            texts.append(None)
            status[i] = _WRONG
            continue
        if text in NA_TEXTS:
            text = None
        texts.append(text)
        status[i] = _MISSING if text is None else _OK
    return texts, status


def validate_rows(
    frame: pd.DataFrame, lines: np.ndarray, source: str, features: list[Feature], label_column: str, labels
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """The valid rows (float32 model matrix, int64 y) of one frame, and the quarantine entries of the others.

    A missing value is kept when its feature may be missing (NaN, or no level set); a category's
    value not among its levels is kept (no level set) unless the feature refuses unseen ones."""
    n = len(frame)
    y, label_reasons = _parse_labels(frame.get(label_column), n, labels)
    x = np.empty((n, width(features)), dtype=np.float64)
    problems: list[list[str]] = [[r] if r else [] for r in label_reasons]
    for feature, (start, stop) in zip(features, spans(features)):
        column = frame.get(feature.name)
        if feature.type == "category":
            texts, status = _parse_category(column, n)
            x[:, start:stop] = one_hot(texts, list(feature.levels or ()))
            known = set(feature.levels or ())
            for i in np.flatnonzero(status != _OK):
                if status[i] == _MISSING:
                    if not feature.missing:
                        problems[i].append(f"missing value for feature {feature.name!r}")
                else:
                    problems[i].append(f"feature {feature.name!r}: {_describe(column.iloc[i])} is not a category level "
                                       "(a string, or an integer)")
            if feature.unseen == "refuse":
                for i in np.flatnonzero(status == _OK):
                    if texts[i] not in known:
                        problems[i].append(f"feature {feature.name!r}: {texts[i]!r} is not one of its levels "
                                           "(the feature refuses unseen values)")
            continue
        values, status = _parse_column(column, n)
        if feature.type == "int":
            fractional = (status == _OK) & (np.floor(values) != values)
            status = np.where(fractional, _WRONG, status)
        x[:, start] = values
        for i in np.flatnonzero(status != _OK):
            if status[i] == _MISSING:
                if not feature.missing:
                    problems[i].append(f"missing value for feature {feature.name!r}")
            elif status[i] == _NONFINITE:
                problems[i].append(f"feature {feature.name!r}: {_describe(column.iloc[i])} is not finite")
            elif status[i] == _OUT_OF_RANGE:
                problems[i].append(f"feature {feature.name!r}: {_describe(column.iloc[i])} is beyond float32's range "
                                   "(about ±3.4e38)")
            else:
                kind = "an integer" if feature.type == "int" else "a number"
                problems[i].append(f"feature {feature.name!r}: {_describe(column.iloc[i])} is not {kind}")
    bad = np.asarray([bool(p) for p in problems], dtype=bool) if n else np.zeros(0, dtype=bool)
    quarantine = []
    for i in np.flatnonzero(bad):
        row = {str(k): jsonable(v, nonfinite="text") for k, v in frame.iloc[i].items()}
        quarantine.append({"source": source, "line": int(lines[i]), "row": row, "reason": "; ".join(problems[i])})
    keep = ~bad
    return x[keep].astype(np.float32), y[keep], quarantine


# -- schema ----------------------------------------------------------------------------------


# An integer column whose values are this distinct (of at least ID_MIN_ROWS rows) is an id when
# its name says so (id, customer_id, CustomerID, uuid) or it counts rows (its values span little
# more than their number): a model would memorise it, and a new row's id says nothing. A unique
# integer measurement (income in cents) is kept.
ID_DISTINCT_SHARE, ID_MIN_ROWS = 0.95, 50
ID_NAME = re.compile(r"(^|[_\W])(id|Id|ID|uuid|UUID|key|KEY)$|[a-z](Id|ID)$")


def _column_cells(sources: list[Source], column: str) -> tuple[np.ndarray, np.ndarray, list]:
    """A column across every source: parsed numbers, their statuses, and the raw cells."""
    values, statuses, raw = [], [], []
    for source in sources:
        if column in source.frame.columns:
            v, st = _parse_column(source.frame[column], len(source.frame))
            values.append(v)
            statuses.append(st)
            raw.extend(source.frame[column].tolist())
    if not values:
        return np.zeros(0), np.zeros(0, dtype=np.int8), []
    return np.concatenate(values), np.concatenate(statuses), raw


def _levels_seen(raw: list) -> tuple[list[str], bool, int]:
    """A category column's distinct level texts (sorted), whether a cell is missing, and the present count."""
    texts, status = _parse_category(pd.Series(raw, dtype=object), len(raw))
    present = [t for t, st in zip(texts, status) if st == _OK and t is not None]
    return sorted(set(present)), bool((status == _MISSING).any()), len(present)


def infer_schema(sources: list[Source], label_column: str,
                 left_out: dict[str, str] | None = None) -> list[Feature]:
    """Every non-label column, in first-seen order: int when all its numbers are integers, float
    when they are numbers, a category when most cells are text (or booleans) of at most
    MAX_LEVELS distinct values (its levels sorted). ``missing`` is set where a cell is missing.
    A constant column, an integer one of nearly all distinct values (an id), and text of too many
    distinct values are left out, with the reason in ``left_out``.

    A dataset whose only feature column holds free text raises TextDatasetError.
    """
    left_out = {} if left_out is None else left_out
    columns: list[str] = []
    for source in sources:
        for column in source.frame.columns:
            if column != label_column and column not in columns:
                columns.append(str(column))
    if not columns:
        raise DatasetError("the dataset has no feature columns (only the label, or nothing)")
    features = []
    for column in columns:
        value, status, raw = _column_cells(sources, column)
        present = status != _MISSING
        if present.any() and (status[present] == _WRONG).mean() > 0.5:
            levels, missing, count = _levels_seen(raw)
            if len(columns) == 1 and not (len(levels) <= MAX_LEVELS and 4 * len(levels) <= count):
                raise TextDatasetError(f"column {column!r} holds text: a text dataset", column=column)
            if len(levels) == 1:
                left_out[column] = f"constant: every value is {levels[0]!r}"
            elif len(levels) > MAX_LEVELS:
                left_out[column] = (f"text of {len(levels)} distinct values, more than a category's {MAX_LEVELS} levels "
                                    "(to keep it, declare it in training.yaml as type: category with its levels)")
            else:
                features.append(Feature(name=column, type="category", levels=levels, missing=missing))
            continue
        ok = status == _OK
        integral = ok.any() and bool(np.all(np.floor(value[ok]) == value[ok]))
        distinct = len(np.unique(value[ok]))
        if ok.any() and distinct == 1:
            left_out[column] = f"constant: every value is {value[ok][0]:g}"
            continue
        if integral and ok.sum() >= ID_MIN_ROWS and distinct >= ID_DISTINCT_SHARE * ok.sum():
            span = float(value[ok].max() - value[ok].min()) + 1
            if ID_NAME.search(column) or span <= 1.5 * distinct:
                left_out[column] = f"an id: {distinct} distinct integers in {int(ok.sum())} rows"
                continue
        if not ok.any():
            left_out[column] = "empty: no value in any row"
            continue
        features.append(Feature(name=column, type="int" if integral else "float", missing=bool((status == _MISSING).any())))
    if not features:
        raise DatasetError("every feature column was left out: "
                           + "; ".join(f"{c} ({why})" for c, why in left_out.items()))
    return features


def complete_schema(features: list[Feature], sources: list[Source], schema_source: str) -> list[Feature]:
    """A declared or kept schema completed from the data: a category declared without levels gets
    the levels seen (sorted). A kept schema (schema.json, an earlier run's inference) also takes
    what the data show now: levels seen since are added (up to MAX_LEVELS), and a feature found
    missing becomes ``missing``. A schema declared in training.yaml is otherwise as written."""
    completed = []
    for feature in features:
        update: dict[str, Any] = {}
        if feature.type == "category" and (feature.levels is None or schema_source == "schema.json"):
            _, _, raw = _column_cells(sources, feature.name)
            seen, missing, _ = _levels_seen(raw)
            kept = list(feature.levels or ())
            levels = kept + [level for level in seen if level not in set(kept)]
            if not levels:
                raise DatasetError(f"category feature {feature.name!r} has no value in any row to take levels from")
            update["levels"] = levels[:MAX_LEVELS]
            if schema_source == "schema.json":
                update["missing"] = feature.missing or missing
        elif schema_source == "schema.json" and not feature.missing:
            _, status, _ = _column_cells(sources, feature.name)
            update["missing"] = bool((status == _MISSING).any())
        completed.append(feature.model_copy(update=update) if update else feature)
    return completed


# -- the pool --------------------------------------------------------------------------------


def resolve_schema(name: str, sources: list[Source], config: TrainingConfig, kept_schema: list[Feature] | None,
                   left_out: dict[str, str]) -> tuple[list[Feature], str]:
    """(features, where they come from): training.yaml's, else the kept schema.json, each completed
    from the data (levels and missingness seen); else inferred from the data (the columns left out,
    and why, added to ``left_out``). TextDatasetError: the data is one text column."""
    if config.features is not None:
        return complete_schema(list(config.features), sources, "config"), "config"
    if kept_schema is not None:
        return complete_schema(list(kept_schema), sources, "schema.json"), "schema.json"
    if not any(len(s.frame) for s in sources):
        raise DatasetError(f"no data rows under {dataset_prefix(name)} (CSV, Parquet or JSON Lines)")
    features = infer_schema(sources, config.label_column, left_out)
    return [f.model_copy(update={"unseen": config.unseen_categories}) if f.type == "category" else f
            for f in features], "inferred"


def load_dataset(
    store: ObjectStore,
    name: str,
    config: TrainingConfig,
    *,
    kept_schema: list[Feature] | None,
    labels: tuple[str, str] | None,
) -> Dataset:
    """Read and validate ``datasets/<name>/`` and ``feedback/<name>/`` into one deduplicated pool."""
    sources, ignored = read_sources(store, name)
    feedback, feedback_bad = read_feedback_records(store, name)
    left_out: dict[str, str] = {}
    try:
        features, schema_source = resolve_schema(name, sources, config, kept_schema, left_out)
    except TextDatasetError as exc:
        return _load_text_dataset(sources, ignored, feedback, feedback_bad, exc.column, config.label_column, labels)
    xs, ys, origin, quarantine = [], [], [], []
    rows_read = 0
    for source in sources:
        rows_read += len(source.frame) + len(source.bad)
        quarantine.extend(source.bad)
        x, y, bad = validate_rows(source.frame, source.lines, source.key, features, config.label_column, labels)
        xs.append(x)
        ys.append(y)
        origin.append(np.zeros(len(y), dtype=bool))
        quarantine.extend(bad)
    quarantine.extend(feedback_bad)
    rows_read += len(feedback) + len(feedback_bad)
    x, y, bad = _tabular_feedback(feedback, features, config.label_column, labels, quarantine)
    xs.append(x)
    ys.append(y)
    origin.append(np.ones(len(y), dtype=bool))
    quarantine.extend(bad)
    x, y, from_feedback = np.concatenate(xs), np.concatenate(ys), np.concatenate(origin)
    keys = [row.tobytes() for row in np.ascontiguousarray(x, dtype=np.float32)]
    duplicated, labels_corrected = _last_label_wins(keys, y, from_feedback)
    keep = ~duplicated
    return Dataset(
        features=features,
        label_column=config.label_column,
        x=np.ascontiguousarray(x[keep]),
        y=np.ascontiguousarray(y[keep]),
        from_feedback=from_feedback[keep],
        sources=[s.key for s in sources],
        schema_source=schema_source,
        rows_read=rows_read,
        feedback_read=len(feedback) + len(feedback_bad),
        quarantine=quarantine,
        duplicates_dropped=int(duplicated.sum()),
        labels_corrected=labels_corrected,
        ignored_files=ignored,
        left_out=left_out,
    )


def feedback_rows(feedback, label_column: str, quarantine: list, *, text_column: str | None = None) -> list[dict]:
    """The feedback records that fit the dataset (texts for a text dataset, features for a tabular one)
    as rows with their label; the others are quarantined."""
    rows = []
    for number, record in enumerate(feedback, start=1):
        if (record.text if text_column else record.features) is None:
            sent = "image" if record.image is not None else "tabular" if record.features is not None else "text"
            reason = f"{sent} feedback for a {'text' if text_column else 'tabular'} model"
            quarantine.append({"source": "feedback", "line": number, "row": record.model_dump(mode="json"),
                               "reason": reason})
            continue
        fields = {text_column: record.text} if text_column else dict(record.features or {})
        rows.append(fields | {label_column: record.label})
    return rows


def _tabular_feedback(feedback, features: list[Feature], label_column: str, labels, quarantine: list):
    """The feedback records as validated rows (x, y, bad); text feedback is quarantined."""
    rows = feedback_rows(feedback, label_column, quarantine)
    if not rows:
        return np.zeros((0, width(features)), dtype=np.float32), np.zeros(0, dtype=np.int64), []
    frame = pd.DataFrame.from_records(rows).astype(object)
    return validate_rows(frame, np.arange(1, len(frame) + 1), "feedback", features, label_column, labels)


def _last_label_wins(keys: list, y: np.ndarray, from_feedback: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows with the same key (feature values, or text): all but the last are dropped (feedback comes
    after the dataset). Returns the dropped mask and how many dropped dataset rows had another label."""
    if not len(keys):
        return np.zeros(0, dtype=bool), 0
    series = pd.Series(keys, dtype=object)
    duplicated = series.duplicated(keep="last").to_numpy()
    if not duplicated.any():
        return duplicated, 0
    last_label = dict(zip(series[~duplicated], y[~duplicated]))
    dropped_from_dataset = duplicated & ~from_feedback
    corrected = sum(1 for k, label in zip(series[dropped_from_dataset], y[dropped_from_dataset]) if last_label[k] != label)
    return duplicated, int(corrected)


@dataclass(frozen=True)
class Deduplicated:
    x: np.ndarray  # object [N]: the items kept
    y: np.ndarray
    from_feedback: np.ndarray
    dropped: int
    corrected: int  # dropped dataset items whose label a later one replaced


def deduplicated(items: list, keys: list, ys: list[int], origin: list[bool]) -> Deduplicated:
    """Items (texts, encoded images) with their labels and origins, the last of each key kept
    (:func:`_last_label_wins`), as the pool's object array."""
    y, from_feedback = np.asarray(ys, dtype=np.int64), np.asarray(origin, dtype=bool)
    duplicated, corrected = _last_label_wins(keys, y, from_feedback)
    keep = ~duplicated
    x = np.empty(int(keep.sum()), dtype=object)
    x[:] = [item for item, k in zip(items, keep) if k]
    return Deduplicated(x, np.ascontiguousarray(y[keep]), from_feedback[keep], int(duplicated.sum()), int(corrected))


def _load_text_dataset(sources, ignored, feedback, feedback_bad, column: str, label_column: str, labels) -> Dataset:
    """A dataset of one text column (and the label): valid rows have a non-blank text and a valid label.

    Text feedback records join the pool; tabular ones are quarantined. Duplicates are removed
    by their text (stripped), the last occurrence wins, as for tabular rows.
    """
    texts: list[str] = []
    ys, origin, quarantine = [], [], []
    rows_read = 0

    def add(frame: pd.DataFrame, lines, source: str, is_feedback: bool) -> None:
        n = len(frame)
        y, reasons = _parse_labels(frame.get(label_column), n, labels)
        values = frame[column].tolist() if column in frame.columns else [None] * n
        for i, value in enumerate(values):
            problems = [reasons[i]] if reasons[i] else []
            text = value.strip() if isinstance(value, str) else ""
            if not text:
                problems.append(f"missing text in column {column!r}")
            if problems:
                row = {str(k): jsonable(v, nonfinite="text") for k, v in frame.iloc[i].items()}
                quarantine.append({"source": source, "line": int(lines[i]), "row": row, "reason": "; ".join(map(str, problems))})
                continue
            texts.append(text)
            ys.append(int(y[i]))
            origin.append(is_feedback)

    for source in sources:
        rows_read += len(source.frame) + len(source.bad)
        quarantine.extend(source.bad)
        add(source.frame, source.lines, source.key, False)
    quarantine.extend(feedback_bad)
    rows = feedback_rows(feedback, label_column, quarantine, text_column=column)
    rows_read += len(feedback) + len(feedback_bad)
    if rows:
        add(pd.DataFrame.from_records(rows).astype(object), np.arange(1, len(rows) + 1), "feedback", True)
    kept = deduplicated(texts, texts, ys, origin)
    return Dataset(
        features=[], label_column=label_column, x=kept.x, y=kept.y, from_feedback=kept.from_feedback,
        sources=[s.key for s in sources], schema_source="text", rows_read=rows_read,
        feedback_read=len(feedback) + len(feedback_bad), quarantine=quarantine,
        duplicates_dropped=kept.dropped, labels_corrected=kept.corrected, ignored_files=ignored,
        text_column=column,
    )


def read_feedback_records(store: ObjectStore, name: str) -> tuple[list[FeedbackRecord], list[dict[str, Any]]]:
    """Every valid feedback record of ``name`` (store order: oldest file first) and quarantine entries for the rest.

    Unlike ModelRegistry.read_feedback, a bad line does not stop the run: it is quarantined.
    """
    from pydantic import ValidationError

    records, bad = [], []
    for key, number, line in feedback_lines(store, name, errors="replace"):
        try:
            records.append(FeedbackRecord.model_validate_json(line))
        except ValidationError as exc:
            reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
            bad.append({"source": key, "line": number, "row": line[:1000], "reason": f"not a feedback record: {reason}"})
    return records, bad


def check_trainable(dataset: Dataset, config: TrainingConfig) -> None:
    """DatasetError unless there are enough valid rows of both classes."""
    n = len(dataset.y)
    where = f"(after {dataset.rows_quarantined} rows quarantined and {dataset.duplicates_dropped} duplicates dropped)"
    if n < config.min_rows:
        raise DatasetError(f"only {n} valid rows {where}: at least min_rows={config.min_rows} are needed")
    counts = np.bincount(dataset.y, minlength=2)
    if (counts == 0).any():
        only = int(np.argmax(counts))
        raise DatasetError(f"all {n} valid rows have label {only}: training needs both classes")
    if counts.min() < MIN_PER_CLASS:
        raise DatasetError(
            f"only {int(counts.min())} rows of class {int(np.argmin(counts))}: at least {MIN_PER_CLASS} per class are needed"
        )


def split_dataset(dataset: Dataset, config: TrainingConfig) -> Split:
    """Stratified train / validation / test split with ``config.seed``."""
    from sklearn.model_selection import train_test_split

    x, y = dataset.x, dataset.y
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=config.test_fraction, stratify=y, random_state=config.seed
        )
        val_share = config.validation_fraction / (1.0 - config.test_fraction)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=val_share, stratify=y_rest, random_state=config.seed
        )
    except ValueError as exc:
        raise DatasetError(f"the data cannot be split stratified: {exc}") from None
    for part, labels in (("train", y_train), ("validation", y_val), ("test", y_test)):
        if len(np.unique(labels)) < 2:
            raise DatasetError(f"the {part} split has a single class: add rows of the rarer class")
    c = np.ascontiguousarray
    return Split(c(x_train), c(y_train), c(x_val), c(y_val), c(x_test), c(y_test))


def quarantine_bytes(entries: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e, sort_keys=True, ensure_ascii=False, default=str) + "\n" for e in entries).encode()


def _seed(store: ObjectStore, name: str, data: bytes, labels: tuple[str, str]) -> bool:
    """Write ``datasets/<name>/data.csv`` unless it is there, and a ``training.yaml`` naming the
    (negative, positive) labels when there is none. Returns whether it wrote the data."""
    key = dataset_prefix(name) + "data.csv"
    if store.exists(key):
        return False
    config_key = dataset_prefix(name) + CONFIG_FILE
    if not store.exists(config_key):
        store.write_bytes(config_key, f"labels: [{labels[0]}, {labels[1]}]\n".encode("utf-8"))
    store.write_bytes(key, data)
    return True


def seed_breast_cancer_dataset(store: ObjectStore, name: str = "breast-cancer") -> bool:
    """Write scikit-learn's breast cancer data as ``datasets/<name>/data.csv`` unless it is there.

    Columns: scikit-learn's 30 feature names, then ``label`` (1 = malignant, scikit-learn's
    target 0); the training.yaml names the labels (benign, malignant). Returns whether it wrote the data.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    frame = pd.DataFrame(data.data, columns=[str(n) for n in data.feature_names])
    frame["label"] = (data.target == 0).astype(int)
    csv = frame.to_csv(index=False, float_format="%.10g").encode("utf-8")
    return _seed(store, name, csv, ("benign", "malignant"))


ES_OR_EN_CSV = "datasets/es_or_en.csv"


def seed_es_or_en_dataset(store: ObjectStore, name: str = "es-or-en") -> bool:
    """Write the shipped Spanish/English texts as ``datasets/<name>/data.csv`` unless it is there.

    Columns ``text,label`` (1 = Spanish): 400 messages of the tiny chat model's corpus, labelled by
    :func:`aprendiz.training.es_or_en.language_of`. Also writes a ``training.yaml`` naming
    the labels (english, spanish) when there is none. Returns whether it wrote the data.
    """
    from importlib.resources import files

    return _seed(store, name, files("aprendiz.training").joinpath(ES_OR_EN_CSV).read_bytes(), ("english", "spanish"))


CREDIT_ROWS = 20_000


def seed_credit_dataset(store: ObjectStore, name: str = "credit") -> bool:
    """Write the generated credit-default table (:mod:`aprendiz.training.synthetic`: numbers and
    categories, missing values, 3 % positives) as ``datasets/<name>/data.csv`` unless it is there,
    and its ``training.yaml`` (label column ``default``, labels No / Yes) when there is none."""
    from aprendiz.training.synthetic import TRAINING_YAML, credit_csv

    key = dataset_prefix(name) + "data.csv"
    if store.exists(key):
        return False
    if not store.exists(dataset_prefix(name) + CONFIG_FILE):
        store.write_bytes(dataset_prefix(name) + CONFIG_FILE, TRAINING_YAML.encode())
    store.write_bytes(key, credit_csv(CREDIT_ROWS))
    return True


# The datasets the project ships (no download), and what each is: `aprendiz train --model <name>`
# writes one into the store when the store has no data for that name yet.
BUILTIN_DATASETS = {
    "breast-cancer": (seed_breast_cancer_dataset, "scikit-learn's breast cancer data"),
    "es-or-en": (seed_es_or_en_dataset, "the shipped Spanish/English texts"),
    "credit": (seed_credit_dataset, "a generated credit-default table (categories, missing values, 3 % positives)"),
    "digits-zero": (lambda store, name: _image_seed("seed_digits_dataset")(store, name),
                    "scikit-learn's handwritten digits as 32 x 32 images: is it a zero"),
    "lesions": (lambda store, name: _image_seed("seed_lesions_dataset")(store, name),
                "synthetic skin images with or without a lesion, 80 of 400 labelled"),
}


def _image_seed(function: str):
    from aprendiz.training import images

    return getattr(images, function)


def seed_builtin(store: ObjectStore, name: str, builtin: str | None = None) -> str | None:
    """Write the shipped dataset ``builtin`` (default: the one named ``name``) as ``datasets/<name>/``
    unless data is there; returns what was written, or None (data was there, or no such dataset)."""
    seed, description = BUILTIN_DATASETS.get(builtin or name, (None, None))
    return description if seed is not None and seed(store, name) else None
