"""aprendiz.store: the same object store over a local folder and an S3-protocol server (moto)."""

from __future__ import annotations

import os

import pytest

from aprendiz.store import KeyNotFoundError, ObjectStore


def test_bytes_roundtrip(store):
    store.write_bytes("models/x/1/model.onnx", b"\x00\x01binary\xff")
    assert store.read_bytes("models/x/1/model.onnx") == b"\x00\x01binary\xff"
    assert store.exists("models/x/1/model.onnx")
    assert not store.exists("models/x/1")  # a folder is not an object
    store.write_bytes("empty", b"")
    assert store.read_bytes("empty") == b""


def test_missing_key_raises_key_not_found(store):
    with pytest.raises(KeyNotFoundError) as info:
        store.read_bytes("models/none/card.json")
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.key == "models/none/card.json"
    assert not store.exists("models/none/card.json")
    with pytest.raises(KeyNotFoundError):
        store.delete("models/none/card.json")


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../outside", "a/../../b", "a/./b", "a//b", "a/", "..", "a\\..\\b", "s3://other/key"]
)
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(ValueError):
        store.write_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.read_bytes(key)


def test_listing_is_recursive_sorted_relative_and_fresh(store):
    assert store.list("models") == []
    assert store.list("") == []
    store.write_bytes("models/b/1/card.json", b"{}")
    assert store.list("models") == ["models/b/1/card.json"]
    store.write_bytes("models/a/1/model.onnx", b"m")
    store.write_bytes("models/a/1/card.json", b"{}")
    store.write_bytes("modelsx/other", b"o")  # shares the string prefix, not the folder
    assert store.list("models/") == ["models/a/1/card.json", "models/a/1/model.onnx", "models/b/1/card.json"]
    assert store.list("models/a") == ["models/a/1/card.json", "models/a/1/model.onnx"]
    assert store.list() == [
        "models/a/1/card.json",
        "models/a/1/model.onnx",
        "models/b/1/card.json",
        "modelsx/other",
    ]
    store.delete("models/a/1/model.onnx")
    assert store.list("models/a") == ["models/a/1/card.json"]
    assert not store.exists("models/a/1/model.onnx")
    assert store.list("nothing/here") == []


def test_overwrite_replaces_the_whole_object(store):
    store.write_bytes("models/x/champion.json", b"a much longer first value")
    store.write_bytes("models/x/champion.json", b"short")
    assert store.read_bytes("models/x/champion.json") == b"short"
    assert store.list("models/x") == ["models/x/champion.json"]


def test_json_helpers(store):
    store.write_json("a/b.json", {"z": 1, "a": ["é", 2.5, None]})
    raw = store.read_bytes("a/b.json").decode("utf-8")
    assert raw == '{\n  "a": [\n    "é",\n    2.5,\n    null\n  ],\n  "z": 1\n}\n'
    assert store.read_json("a/b.json") == {"z": 1, "a": ["é", 2.5, None]}


def test_repr_and_url_hold_no_secrets(s3_bucket, s3_storage_options, tmp_path):
    store = ObjectStore(f"s3://{s3_bucket}/root/", storage_options=s3_storage_options)
    assert store.url == f"s3://{s3_bucket}/root"
    assert "testing" not in repr(store) and s3_bucket in repr(store)
    assert "secret" not in repr(ObjectStore("s3://user:secret@bucket/p", storage_options=s3_storage_options))
    local = ObjectStore(str(tmp_path / "new" / "folder"))
    assert (tmp_path / "new" / "folder").is_dir()
    assert local.url == str(tmp_path / "new" / "folder")


def test_relative_local_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ObjectStore("var/registry")
    store.write_bytes("k", b"v")
    assert (tmp_path / "var" / "registry" / "k").read_bytes() == b"v"
    assert os.path.isabs(store.url)


def test_local_write_is_atomic_and_leaves_no_temporary_file(local_store, monkeypatch):
    local_store.write_bytes("m/champion.json", b"old")

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        local_store.write_bytes("m/champion.json", b"new")
    monkeypatch.undo()
    assert local_store.read_bytes("m/champion.json") == b"old"
    folder = os.path.join(local_store.url, "m")
    assert os.listdir(folder) == ["champion.json"]
    local_store.write_bytes("m/champion.json", b"new")
    assert os.listdir(folder) == ["champion.json"]
    assert local_store.read_bytes("m/champion.json") == b"new"


def test_listing_hides_leftover_temporary_files(local_store):
    local_store.write_bytes("m/card.json", b"{}")
    with open(os.path.join(local_store.url, "m", ".aprendiz-tmp-card.json.123"), "wb") as handle:
        handle.write(b"half")
    assert local_store.list("m") == ["m/card.json"]


def test_s3_listing_sees_objects_written_by_another_client(s3_store, s3_bucket, s3_env):
    """No listing cache: an object another process PUT right after a listing is seen at once."""
    import boto3

    s3_store.write_bytes("feedback/m/a.jsonl", b"{}\n")
    assert s3_store.list("feedback/m") == ["feedback/m/a.jsonl"]
    other = boto3.client(
        "s3", endpoint_url=s3_env, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    other.put_object(Bucket=s3_bucket, Key="root/feedback/m/b.jsonl", Body=b"{}\n")
    assert s3_store.list("feedback/m") == ["feedback/m/a.jsonl", "feedback/m/b.jsonl"]
    other.delete_object(Bucket=s3_bucket, Key="root/feedback/m/a.jsonl")
    assert s3_store.list("feedback/m") == ["feedback/m/b.jsonl"]
    assert not s3_store.exists("feedback/m/a.jsonl")


def test_s3_without_options_uses_the_standard_aws_variables(s3_bucket):
    """AWS_ENDPOINT_URL and the AWS_* credentials (set by the s3_env fixture) are enough: the MinIO setup."""
    store = ObjectStore(f"s3://{s3_bucket}")
    store.write_json("models/m/champion.json", {"version": "1"})
    assert store.read_json("models/m/champion.json") == {"version": "1"}
    assert store.list() == ["models/m/champion.json"]


def test_create_only_writes_never_replace(store):
    from aprendiz.store import KeyExistsError

    store.create_json("claims/a.json", {"by": "first"})
    with pytest.raises(KeyExistsError, match="claims/a.json"):
        store.create_json("claims/a.json", {"by": "second"})
    with pytest.raises(KeyExistsError):
        store.create_bytes("claims/a.json", b"third")
    assert store.read_json("claims/a.json") == {"by": "first"}
    assert store.list("claims") == ["claims/a.json"]  # the local temporary file is gone


def test_of_racing_create_only_writers_exactly_one_wins(store):
    """16 threads create the same key at once: one succeeds, 15 get KeyExistsError, the object is the winner's."""
    import threading

    from aprendiz.store import KeyExistsError

    start = threading.Barrier(16)
    won: list[int] = []
    lost: list[int] = []

    def writer(i: int) -> None:
        start.wait()
        try:
            store.create_bytes("race/claim", str(i).encode())
            won.append(i)
        except KeyExistsError:
            lost.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and len(lost) == 15
    assert store.read_bytes("race/claim") == str(won[0]).encode()


def test_the_store_as_a_pyarrow_filesystem_reads_what_the_store_wrote(store):
    """Ray Data reads a distributed run's Parquet shards, and Ray Train writes its checkpoint,
    through ``store.arrow()``: the same objects, local folder or S3 alike."""
    import io

    import pandas as pd
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pd.DataFrame({"a": [1.5, 2.5], "label": [0, 1]}).to_parquet(buffer)
    store.write_bytes("datasets/big/part-0.parquet", buffer.getvalue())
    fs, path = store.arrow("datasets/big/part-0.parquet")
    assert pq.read_table(path, filesystem=fs).to_pandas()["a"].tolist() == [1.5, 2.5]
    fs, folder = store.arrow("runs/big/r1/ray-train")
    fs.create_dir(folder)
    with fs.open_output_stream(folder + "/model.ubj") as out:
        out.write(b"booster")
    assert store.read_bytes("runs/big/r1/ray-train/model.ubj") == b"booster"
    assert store.arrow()[1] == store.arrow("x")[1].rsplit("/", 1)[0]  # the root
