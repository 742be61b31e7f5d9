"""aprendiz.registry: publish, promote and load model versions; feedback; the card's rules."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from aprendiz.registry import (
    Champion,
    Feature,
    FeedbackRecord,
    ModelCard,
    ModelRegistry,
    PromotionConflictError,
    VersionExistsError,
    VersionNotFoundError,
    check_name,
    new_version,
)


def tiny_onnx(input_name: str = "input", output_name: str = "probabilities", graph_name: str = "tiny") -> bytes:
    """A valid ONNX model (Identity) with the given input and output names."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], [output_name])],
        graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def card(name: str = "iris", version: str | None = None, **overrides) -> ModelCard:
    data = {
        "name": name,
        "version": version or new_version(),
        "kind": "tabular",
        "features": [{"name": "a"}, {"name": "b", "type": "int"}],
        "labels": ("benign", "malignant"),
        "threshold": 0.3,
        "metrics": {"roc_auc": 0.99},
        "data_fingerprint": "abc",
        "algorithm": "logistic_regression",
        **overrides,
    }
    return ModelCard.model_validate(data)


@pytest.fixture
def registry(store) -> ModelRegistry:
    return ModelRegistry(store)


ONNX = tiny_onnx()


def test_publish_then_read_back(registry):
    c = card(version="20260101T000000Z-aaaa")
    assert registry.publish(c, ONNX, {"tokenizer.json": b"{}", "extra/notes.txt": b"hi"}) == c.version
    assert registry.versions("iris") == [c.version]
    assert registry.models() == ["iris"]
    assert registry.card("iris", c.version) == c
    loaded = registry.load("iris", c.version)
    assert loaded.card == c
    assert loaded.onnx_bytes == ONNX
    assert loaded.files == {"tokenizer.json": b"{}", "extra/notes.txt": b"hi"}
    stored = registry.store.read_json(f"models/iris/{c.version}/card.json")
    assert stored["labels"] == ["benign", "malignant"] and stored["created_at"].endswith("Z")


def test_versions_are_sorted_and_models_listed(registry):
    for version in ("20260301T000000Z-0001", "20260101T000000Z-0001", "20260201T000000Z-0001"):
        registry.publish(card(version=version), ONNX)
    registry.publish(card(name="other", version="v1"), ONNX)
    assert registry.versions("iris") == ["20260101T000000Z-0001", "20260201T000000Z-0001", "20260301T000000Z-0001"]
    assert registry.models() == ["iris", "other"]
    assert registry.versions("nobody") == []


def test_a_version_without_card_is_invisible(registry):
    registry.store.write_bytes("models/iris/20260101T000000Z-0000/model.onnx", ONNX)  # a publish cut short
    assert registry.versions("iris") == []
    assert registry.models() == []
    with pytest.raises(VersionNotFoundError):
        registry.card("iris", "20260101T000000Z-0000")
    with pytest.raises(VersionNotFoundError):
        registry.load("iris", "20260101T000000Z-0000")
    with pytest.raises(VersionNotFoundError):
        registry.promote("iris", "20260101T000000Z-0000")


def test_publishing_a_version_twice_is_refused(registry):
    c = card()
    registry.publish(c, ONNX)
    with pytest.raises(VersionExistsError):
        registry.publish(c, tiny_onnx(graph_name="other"))
    assert registry.load("iris", c.version).onnx_bytes == ONNX
    # even a version that was only half written is not overwritten
    registry.store.write_bytes("models/iris/half/model.onnx", ONNX)
    with pytest.raises(VersionExistsError):
        registry.publish(card(version="half"), ONNX)


def test_publish_checks_onnx_and_extra_files(registry):
    with pytest.raises(ValueError, match="no input 'input'"):
        registry.publish(card(), tiny_onnx(input_name="x"))
    with pytest.raises(ValueError, match="not a valid ONNX"):
        registry.publish(card(), b"not onnx")
    with pytest.raises(ValueError, match="card.json"):
        registry.publish(card(), ONNX, {"card.json": b"{}"})
    with pytest.raises(ValueError):
        registry.publish(card(), ONNX, {"../escape": b"x"})
    assert registry.store.list() == []


def test_promote_and_champion(registry):
    assert registry.champion("iris") is None
    first, second = card(version="20260101T000000Z-0001"), card(version="20260102T000000Z-0001")
    registry.publish(first, ONNX)
    registry.publish(second, ONNX)
    champion = registry.promote("iris", first.version, reason="first")
    assert registry.champion("iris") == champion
    assert champion.promoted_at.tzinfo is not None
    registry.promote("iris", second.version)
    assert registry.champion("iris").version == second.version
    assert registry.store.list("models/iris") == [
        f"models/iris/{first.version}/card.json",
        f"models/iris/{first.version}/model.onnx",
        f"models/iris/{second.version}/card.json",
        f"models/iris/{second.version}/model.onnx",
        "models/iris/champion.json",
    ]
    assert registry.versions("iris") == [first.version, second.version]  # champion.json is not a version


def test_conditional_promotion_lets_one_of_two_runs_replace_a_champion(registry):
    """Two training runs read the same champion and both decide to promote: the second finds the claim taken."""
    base, a, b = (card(version=f"20260101T00000{i}Z-0001") for i in range(3))
    for c in (base, a, b):
        registry.publish(c, ONNX)
    first = registry.promote_over("iris", base.version, None, "first model")  # no champion yet
    with pytest.raises(PromotionConflictError, match=f"{base.version} was promoted over no champion first"):
        registry.promote_over("iris", a.version, None)
    read_by_both = registry.champion("iris")
    assert read_by_both == first
    registry.promote_over("iris", a.version, read_by_both, "run a")
    with pytest.raises(PromotionConflictError, match=f"{a.version} was promoted over champion {base.version} first"):
        registry.promote_over("iris", b.version, read_by_both, "run b")
    assert registry.champion("iris").version == a.version
    assert registry.versions("iris") == [base.version, a.version, b.version]  # claims are not versions
    assert registry.models() == ["iris"]


def test_conditional_promotion_sees_a_champion_changed_by_hand_and_a_rollback_is_a_new_champion(registry):
    base, a, b = (card(version=f"20260101T00000{i}Z-0001") for i in range(3))
    for c in (base, a, b):
        registry.publish(c, ONNX)
    read = registry.promote("iris", base.version)
    registry.promote("iris", a.version, "by hand")  # an operator, between a run's read and its promotion
    with pytest.raises(PromotionConflictError, match=f"{a.version} was promoted over champion {base.version}"):
        registry.promote_over("iris", b.version, read)
    assert registry.champion("iris").version == a.version
    # rolled back to base by hand: a new champion (a new promotion time), which a run may replace again
    back = registry.promote("iris", base.version, "rollback")
    registry.promote_over("iris", b.version, back)
    assert registry.champion("iris").version == b.version
    with pytest.raises(VersionNotFoundError):
        registry.promote_over("iris", "20990101T000000Z-ffff", registry.champion("iris"))


def test_promote_of_an_unknown_version_is_refused(registry):
    with pytest.raises(VersionNotFoundError, match="no complete version"):
        registry.promote("iris", "20990101T000000Z-ffff")
    assert registry.champion("iris") is None


def test_bad_names_and_versions_are_refused(registry):
    for bad in ("", "Iris", "-iris", "../x", "a/b", "x" * 64, "with space"):
        with pytest.raises(ValueError):
            check_name(bad)
        with pytest.raises(ValueError):
            registry.versions(bad)
    with pytest.raises(ValueError):
        registry.champion("../etc")
    with pytest.raises(ValueError):
        registry.card("iris", "../champion.json")
    with pytest.raises(ValidationError):
        card(name="Bad Name")


def test_new_version_is_a_sortable_utc_timestamp():
    earlier = new_version(datetime(2026, 11, 26, 15, 25, 1, tzinfo=timezone(timedelta(hours=1))))
    assert re.fullmatch(r"20261126T142501Z-[0-9a-f]{4}", earlier)
    assert new_version() > earlier
    card(version=new_version())  # a generated version is a valid version


def test_card_rules():
    with pytest.raises(ValidationError, match="at least one feature"):
        card(features=[])
    with pytest.raises(ValidationError, match="appear twice"):
        card(features=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValidationError, match="text_field"):
        card(kind="text", features=[])
    with pytest.raises(ValidationError, match="no features"):
        card(kind="text", text_field="review")
    with pytest.raises(ValidationError):
        card(threshold=1.5)
    with pytest.raises(ValidationError):
        card(unknown=1)
    with pytest.raises(ValidationError):
        card(labels=("same", "same"))
    with pytest.raises(ValidationError):
        card(labels=("1", "0"))
    text = card(kind="text", features=[], text_field="review")
    assert text.onnx_input == "input" and text.onnx_output == "probabilities"
    naive = card(created_at=datetime(2026, 1, 1, 12, 0))
    assert naive.created_at == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert Feature(name="x").type == "float"


def test_label_for_and_label_index():
    c = card()
    assert c.label_for(0.3) == "malignant"  # positive at probability >= threshold
    assert c.label_for(0.2999) == "benign"
    for value, index in ((0, 0), (1, 1), ("0", 0), ("1", 1), ("benign", 0), ("malignant", 1)):
        assert c.label_index(value) == index
    for bad in (2, -1, "2", "Benign", True, 1.0, None):
        with pytest.raises(ValueError, match="is not a class of model 'iris'"):
            c.label_index(bad)


def test_feedback_roundtrip_over_several_calls(registry):
    assert registry.read_feedback("iris") == []
    first = [
        FeedbackRecord(features={"a": 1.5, "b": 2}, label=1, prediction_id="p1", model_version="v1"),
        FeedbackRecord(features={"a": -1.0, "b": 0}, label=0),
    ]
    second = [FeedbackRecord(text="great product, ünïcode", label=1)]
    key1 = registry.write_feedback("iris", first)
    key2 = registry.write_feedback("iris", second)
    assert key1 != key2
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    pattern = rf"feedback/iris/{day}/\d{{8}}T\d{{6}}Z-[0-9a-f]{{32}}\.jsonl"
    assert re.fullmatch(pattern, key1) and re.fullmatch(pattern, key2)
    assert registry.store.exists(key1)
    lines = registry.store.read_bytes(key1).decode("utf-8").splitlines()
    assert [json.loads(line)["label"] for line in lines] == [1, 0]
    records = registry.read_feedback("iris")
    assert sorted(records, key=lambda r: (r.text or "", r.label)) == sorted(
        first + second, key=lambda r: (r.text or "", r.label)
    )
    assert registry.read_feedback("other") == []


def test_feedback_rules(registry):
    with pytest.raises(ValueError):
        registry.write_feedback("iris", [])
    with pytest.raises(ValidationError):
        FeedbackRecord(label=1)  # no input
    with pytest.raises(ValidationError):
        FeedbackRecord(features={"a": 1.0}, text="both", label=1)
    with pytest.raises(ValidationError):
        FeedbackRecord(features={"a": float("nan")}, label=1)  # JSON has no NaN
    with pytest.raises(ValidationError):
        FeedbackRecord(features={"a": 1.0}, label=2)
    with pytest.raises(ValidationError):
        FeedbackRecord(features={"a": 1.0}, label=True)
    with pytest.raises(ValidationError):
        FeedbackRecord(features={"a": 1.0}, label=1, extra="no")


def test_champion_model():
    champion = Champion(version="v1", promoted_at=datetime(2026, 1, 1))
    assert champion.promoted_at.tzinfo == timezone.utc and champion.reason == ""
    with pytest.raises(ValidationError):
        Champion(version="../v1", promoted_at=datetime(2026, 1, 1))
