"""The model registry: the contract between the training job and the classifier service.

Layout in an :class:`~aprendiz.store.ObjectStore`::

    models/<name>/<version>/model.onnx     the model (float [N, 2] probabilities out)
    models/<name>/<version>/card.json      what it is; written last, so a version without
                                           it is incomplete and invisible
    models/<name>/<version>/<other files>  e.g. tokenizer.json for a text model
    models/<name>/champion.json            which version serves, replaced atomically
    promotions/<name>/<champion>.json      the one promotion that replaced that champion (create-only,
                                           so of two training runs that read the same champion,
                                           exactly one promotes)
    datasets/<name>/...                    training data
    feedback/<name>/<YYYY-MM-DD>/<stamp>-<uuid>.jsonl   labelled examples sent back by clients

Versions are UTC timestamps that sort as strings ("20261126T142501Z-3f9a"), so the
newest version is the last one of :meth:`ModelRegistry.versions`.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aprendiz.images import ImageTransform
from aprendiz.store import KeyExistsError, KeyNotFoundError, ObjectStore, check_key
from aprendiz.strict import Strict

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# Versions are generated as "20261126T142501Z-3f9a": the same pattern, upper case allowed.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"

MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"
CHAMPION_FILE = "champion.json"
_RESERVED_FILES = frozenset({MODEL_FILE, CARD_FILE})
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class VersionExistsError(FileExistsError):
    """A version is published once; its files are never overwritten."""


class PromotionConflictError(RuntimeError):
    """Another promotion replaced the champion this one was decided against."""

    def __init__(self, name: str, replacing: str | None, winner: str):
        over = f"champion {replacing}" if replacing else "no champion"
        super().__init__(f"model {name!r}: {winner} was promoted over {over} first")
        self.name = name
        self.replacing = replacing
        self.winner = winner


class VersionNotFoundError(FileNotFoundError):
    """No complete version (one with a card.json) of this model exists."""

    def __init__(self, name: str, version: str):
        super().__init__(f"model {name!r} has no complete version {version!r}")
        self.name = name
        self.version = version


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    """Aware datetimes are converted to UTC; naive ones are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise ValueError."""
    if not isinstance(name, str) or re.fullmatch(NAME_PATTERN, name) is None:
        raise ValueError(
            f"model name {name!r} is not valid: use 1 to 63 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_version(version: str) -> str:
    """Return ``version`` if it is a valid version, else raise ValueError."""
    if not isinstance(version, str) or re.fullmatch(VERSION_PATTERN, version) is None:
        raise ValueError(
            f"version {version!r} is not valid: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return version


def new_version(now: datetime | None = None) -> str:
    """A fresh version: the UTC time to the second and 4 random hex digits, e.g. "20261126T142501Z-3f9a"."""
    stamp = _as_utc(now or _utcnow()).strftime(_STAMP_FORMAT)
    return f"{stamp}-{secrets.token_hex(2)}"


def dataset_prefix(name: str) -> str:
    """The folder of a model's training data ("datasets/<name>/")."""
    return f"datasets/{check_name(name)}/"


def feedback_prefix(name: str) -> str:
    """The folder of the feedback sent back for a model ("feedback/<name>/")."""
    return f"feedback/{check_name(name)}/"


ModelName = Annotated[str, AfterValidator(check_name)]
Version = Annotated[str, AfterValidator(check_version)]
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


# The ONNX contract between training and serving: a version's model.onnx takes float32 [N, F]
# as TABULAR_INPUT (tabular), int64 [N, L] INPUT_IDS and ATTENTION_MASK from the version's
# TOKENIZER_FILE (text), or float32 [N, C, H, W] as IMAGE_INPUT, made by the card's image transform
# (image), and gives float32 [N, 2] as OUTPUT, column 1 the positive class.
TABULAR_INPUT = "input"
IMAGE_INPUT = "pixels"
INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"
OUTPUT = "probabilities"
TOKENIZER_FILE = "tokenizer.json"


MAX_LEVELS = 64  # a category keeps at most this many levels (the most frequent ones)


class Feature(Strict):
    """One input column of a tabular model, in the order the model takes them.

    ``float`` and ``int`` features are numbers; a ``category`` holds one of its ``levels`` (strings,
    one-hot encoded inside the ONNX graph). ``missing``: the value may be absent (null), and the
    graph imputes it (numbers: the training rows' median, or the trees' own missing-value branch;
    a category: no level set). ``unseen``: what a category does with a value not in ``levels``,
    ``ignore`` (encoded as no level, like a missing one) or ``refuse`` (a 400 at serving).
    """

    name: str = Field(min_length=1)
    type: Literal["float", "int", "category"] = "float"
    levels: list[str] | None = Field(None, description="category: its values, in encoding order.")
    missing: bool = Field(False, description="The value may be absent (null): imputed inside the graph.")
    unseen: Literal["ignore", "refuse"] = Field("ignore", description="category: a value not in levels.")

    @model_validator(mode="after")
    def _levels(self) -> "Feature":
        if self.type != "category" and self.levels is not None:
            raise ValueError(f"feature {self.name!r}: levels are only for type: category")
        if self.levels is not None:
            if not self.levels:
                raise ValueError(f"feature {self.name!r}: levels, when given, must list at least one value")
            if len(set(self.levels)) != len(self.levels):
                raise ValueError(f"feature {self.name!r}: a level is listed twice")
            if len(self.levels) > MAX_LEVELS:
                raise ValueError(f"feature {self.name!r}: {len(self.levels)} levels, at most {MAX_LEVELS}")
            if any(not level for level in self.levels):
                raise ValueError(f"feature {self.name!r}: a level is empty (an empty cell is a missing value)")
        return self


def has_categories(features: list[Feature]) -> bool:
    """Whether the model takes one input per column (a category among them) rather than one float tensor."""
    return any(f.type == "category" for f in features)


class ModelCard(Strict):
    """What a published model version is and how to use it; stored as card.json beside model.onnx."""

    name: ModelName
    version: Version
    kind: Literal["tabular", "text", "image"]
    features: list[Feature] = Field(default_factory=list, description="Tabular: the input columns, in order.")
    text_field: str | None = Field(None, description="Text: the request field holding the text.")
    image: ImageTransform | None = Field(
        None, description="Image: the transform from a decoded image to the model's float32 [C, H, W] input.")
    labels: tuple[str, str] = Field(("negative", "positive"), description="(negative, positive) label names.")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Positive when probability >= threshold.")
    onnx_input: str = Field(TABULAR_INPUT, min_length=1)
    onnx_output: str = Field(
        OUTPUT, min_length=1, description="float [N, 2]; column 1 is the positive class probability."
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    data_fingerprint: str = Field(min_length=1)
    algorithm: str = Field(min_length=1)
    created_at: UtcDatetime = Field(default_factory=_utcnow)
    training: dict[str, Any] = Field(default_factory=dict, description="Free-form details of the training run.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: tuple[str, str]) -> tuple[str, str]:
        if not all(label.strip() for label in labels):
            raise ValueError("label names must not be empty")
        if labels[0] == labels[1]:
            raise ValueError(f"the two label names are the same ({labels[0]!r})")
        for index, label in enumerate(labels):
            if label in ("0", "1") and label != str(index):
                raise ValueError(f"label {label!r} at position {index} would be read as the other class's index")
        return labels

    @model_validator(mode="after")
    def _inputs(self) -> "ModelCard":
        if self.kind != "image" and self.image is not None:
            raise ValueError("image (the transform) is only meaningful for kind: image")
        if self.kind == "image":
            if self.image is None:
                raise ValueError("an image model needs image: the transform it was trained with")
            if self.features or self.text_field is not None:
                raise ValueError("an image model takes no features and no text_field")
        elif self.kind == "tabular":
            if not self.features:
                raise ValueError("a tabular model needs at least one feature")
            if self.text_field is not None:
                raise ValueError("text_field is only meaningful for kind: text")
            names = [f.name for f in self.features]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"feature names appear twice: {duplicates}")
            unlevelled = [f.name for f in self.features if f.type == "category" and not f.levels]
            if unlevelled:
                raise ValueError(f"category features without levels: {unlevelled}")
        else:
            if self.features:
                raise ValueError("a text model takes no features, only text_field")
            if not self.text_field:
                raise ValueError("a text model needs text_field")
        return self

    def graph_inputs(self) -> list[str]:
        """The ONNX inputs the card's model takes: one per feature for a model with a category
        (see aprendiz.columns), else ``onnx_input``."""
        if self.kind == "tabular" and has_categories(self.features):
            return [f.name for f in self.features]
        return [self.onnx_input]

    def label_for(self, probability: float) -> str:
        """The label name the model gives for this positive-class probability."""
        return self.labels[1] if probability >= self.threshold else self.labels[0]

    def label_index(self, label: int | str) -> int:
        """0 or 1 for a class given as 0/1, "0"/"1" or a label name; ValueError otherwise."""
        if isinstance(label, str):
            if label in self.labels:
                return self.labels.index(label)
            if label in ("0", "1"):
                return int(label)
        elif isinstance(label, int) and not isinstance(label, bool) and label in (0, 1):
            return label
        raise ValueError(
            f"label {label!r} is not a class of model {self.name!r}: use 0, 1, "
            f"{self.labels[0]!r} or {self.labels[1]!r}"
        )


class Champion(Strict):
    """Which version of a model serves; stored as models/<name>/champion.json."""

    version: Version
    promoted_at: UtcDatetime = Field(default_factory=_utcnow)
    reason: str = ""


class FeedbackRecord(Strict):
    """One labelled example a client sent back: a tabular row (features), a text or an image (its
    PNG or JPEG bytes as sent, base64), and its true class."""

    features: dict[str, Annotated[float, Field(allow_inf_nan=False)] | str | None] | None = Field(
        None, description="Feature values: numbers, a category's level, or null (missing).")
    text: str | None = None
    image: str | None = Field(None, description="The encoded image (PNG or JPEG), base64.")
    label: Annotated[int, Field(strict=True, ge=0, le=1)]
    prediction_id: str | None = None
    model_version: str | None = None
    received_at: UtcDatetime = Field(default_factory=_utcnow)

    @model_validator(mode="after")
    def _one_input(self) -> "FeedbackRecord":
        if sum(value is not None for value in (self.features, self.text, self.image)) != 1:
            raise ValueError("a feedback record carries exactly one of features, text and image")
        return self


@dataclass(frozen=True)
class LoadedArtifact:
    """A complete model version: its card, its ONNX bytes and its other files (relative name -> bytes)."""

    card: ModelCard
    onnx_bytes: bytes
    files: dict[str, bytes] = field(default_factory=dict)


def _check_onnx(card: ModelCard, onnx_bytes: bytes) -> None:
    """Refuse ONNX bytes that do not parse or lack the input and output the card names."""
    import onnx

    try:
        graph = onnx.load_model_from_string(onnx_bytes).graph
    except Exception as exc:  # protobuf raises DecodeError, onnx its own errors
        raise ValueError(f"model.onnx of {card.name}/{card.version} is not a valid ONNX model: {exc}") from None
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    lacking = [name for name in card.graph_inputs() if name not in inputs]
    if lacking:
        raise ValueError(f"the ONNX model has no input {lacking[0]!r} (it has {inputs})")
    if card.onnx_output not in outputs:
        raise ValueError(f"the ONNX model has no output {card.onnx_output!r} (it has {outputs})")


def _champion_id(champion: Champion | None) -> tuple[str, datetime] | None:
    return (champion.version, champion.promoted_at) if champion else None


def _claim_id(champion: Champion | None) -> str:
    """The claim's file name: the replaced champion's version and promotion time, or "first"."""
    if champion is None:
        return "first"
    return f"{champion.version}@{champion.promoted_at:%Y%m%dT%H%M%S%fZ}"


def feedback_lines(store: ObjectStore, name: str, *, errors: str = "strict") -> Iterator[tuple[str, int, str]]:
    """(file key, line number, line) of every non-blank line of ``name``'s feedback files, oldest file first;
    ``errors`` is how undecodable UTF-8 is handled."""
    for key in store.list(feedback_prefix(name)):
        if not key.endswith(".jsonl"):
            continue
        text = store.read_bytes(key).decode("utf-8", errors=errors)
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield key, number, line


class ModelRegistry:
    """Publish, promote and load model versions kept in an :class:`ObjectStore`."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def __repr__(self) -> str:
        return f"ModelRegistry({self.store!r})"

    @staticmethod
    def _version_prefix(name: str, version: str) -> str:
        return f"models/{check_name(name)}/{check_version(version)}/"

    @staticmethod
    def _champion_key(name: str) -> str:
        return f"models/{check_name(name)}/{CHAMPION_FILE}"

    # -- models ------------------------------------------------------------------------------

    def publish(self, card: ModelCard, onnx_bytes: bytes, extra_files: dict[str, bytes] | None = None) -> str:
        """Store a new version (model.onnx, the extra files, card.json last) and return its version.

        Raises VersionExistsError when anything is already stored under that version.
        """
        prefix = self._version_prefix(card.name, card.version)
        extras = dict(extra_files or {})
        for relative in extras:
            check_key(relative)
            if relative in _RESERVED_FILES:
                raise ValueError(f"extra file {relative!r} would replace the version's own {relative}")
        _check_onnx(card, onnx_bytes)
        if self.store.list(prefix):
            raise VersionExistsError(f"model {card.name!r} already has a version {card.version!r}")
        self.store.write_bytes(prefix + MODEL_FILE, onnx_bytes)
        for relative, data in sorted(extras.items()):
            self.store.write_bytes(prefix + relative, data)
        self.store.write_json(prefix + CARD_FILE, card.model_dump(mode="json"))
        return card.version

    def promote(self, name: str, version: str, reason: str = "") -> Champion:
        """Make a complete version the one that serves; VersionNotFoundError for any other."""
        if not self.store.exists(self._version_prefix(name, version) + CARD_FILE):
            raise VersionNotFoundError(name, version)
        champion = Champion(version=version, promoted_at=_utcnow(), reason=reason)
        self.store.write_json(self._champion_key(name), champion.model_dump(mode="json"))
        return champion

    def promote_over(self, name: str, version: str, replacing: Champion | None, reason: str = "") -> Champion:
        """Promote ``version`` only if the champion is still ``replacing`` (None: there was none),
        the champion the decision was made against; PromotionConflictError otherwise.

        A create-only claim under ``promotions/<name>/`` names the champion replaced (its version and
        promotion time, so a rollback to an old version is a new champion); of two runs that read the
        same champion, one creates the claim and the other finds it taken. A champion changed by hand
        (:meth:`promote`) since ``replacing`` was read is a conflict too."""
        if not self.store.exists(self._version_prefix(name, version) + CARD_FILE):
            raise VersionNotFoundError(name, version)
        claim = f"promotions/{check_name(name)}/{_claim_id(replacing)}.json"
        champion = Champion(version=version, promoted_at=_utcnow(), reason=reason)
        try:
            self.store.create_json(claim, {"replacing": replacing.model_dump(mode="json") if replacing else None,
                                           "champion": champion.model_dump(mode="json")})
        except KeyExistsError:
            winner = self.store.read_json(claim).get("champion", {}).get("version", "another version")
            raise PromotionConflictError(name, replacing.version if replacing else None, winner) from None
        current = self.champion(name)
        if _champion_id(current) != _champion_id(replacing):
            raise PromotionConflictError(name, replacing.version if replacing else None,
                                         current.version if current else "a removal")
        self.store.write_json(self._champion_key(name), champion.model_dump(mode="json"))
        return champion

    def champion(self, name: str) -> Champion | None:
        """The serving version of ``name``, or None when none was promoted."""
        try:
            data = self.store.read_json(self._champion_key(name))
        except KeyNotFoundError:
            return None
        return Champion.model_validate(data)

    def card(self, name: str, version: str) -> ModelCard:
        """The card of a complete version."""
        key = self._version_prefix(name, version) + CARD_FILE
        try:
            data = self.store.read_json(key)
        except KeyNotFoundError:
            raise VersionNotFoundError(name, version) from None
        card = ModelCard.model_validate(data)
        if (card.name, card.version) != (name, version):
            raise ValueError(f"{key} describes {card.name}/{card.version}, not {name}/{version}")
        return card

    def load(self, name: str, version: str) -> LoadedArtifact:
        """A complete version with all its files."""
        card = self.card(name, version)
        prefix = self._version_prefix(name, version)
        files: dict[str, bytes] = {}
        for key in self.store.list(prefix):
            relative = key[len(prefix) :]
            if relative not in _RESERVED_FILES:
                files[relative] = self.store.read_bytes(key)
        return LoadedArtifact(card=card, onnx_bytes=self.store.read_bytes(prefix + MODEL_FILE), files=files)

    def import_version(self, source: "ModelRegistry", name: str, version: str) -> str:
        """Copy a complete version from another registry (a staging store, a scratch training run)
        into this one, unpromoted; returns its version."""
        artifact = source.load(name, version)
        return self.publish(artifact.card, artifact.onnx_bytes, artifact.files)

    def versions(self, name: str) -> list[str]:
        """The complete versions of ``name``, oldest first."""
        found = set()
        for key in self.store.list(f"models/{check_name(name)}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == CARD_FILE:
                found.add(parts[2])
        return sorted(found)

    def models(self) -> list[str]:
        """The names that have at least one complete version."""
        found = set()
        for key in self.store.list("models/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == CARD_FILE:
                found.add(parts[1])
        return sorted(found)

    # -- feedback ----------------------------------------------------------------------------

    def write_feedback(self, name: str, records: list[FeedbackRecord]) -> str:
        """Store the records as one JSON Lines object, atomically, and return its key."""
        if not records:
            raise ValueError("no feedback records to write")
        now = _utcnow()
        key = f"{feedback_prefix(name)}{now:%Y-%m-%d}/{now.strftime(_STAMP_FORMAT)}-{uuid.uuid4().hex}.jsonl"
        lines = [json.dumps(r.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) for r in records]
        self.store.write_bytes(key, ("\n".join(lines) + "\n").encode("utf-8"))
        return key

    def read_feedback(self, name: str) -> list[FeedbackRecord]:
        """Every feedback record of ``name``, oldest file first."""
        records: list[FeedbackRecord] = []
        for key, number, line in feedback_lines(self.store, name):
            try:
                records.append(FeedbackRecord.model_validate_json(line))
            except ValidationError as exc:
                raise ValueError(f"{key}:{number} is not a feedback record: {exc}") from None
        return records
