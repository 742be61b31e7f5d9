"""aprendiz datasets push / describe: a dataset uploaded to the store and described before training."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from aprendiz.cli import app
from aprendiz.store import ObjectStore
from aprendiz.training.describe import describe_dataset


@pytest.fixture
def platform_file(tmp_path):
    path = tmp_path / "aprendiz.yaml"
    path.write_text(f"store: {{url: {tmp_path / 'store'}}}\nclassifiers: [{{name: churn}}]\n")
    return path


def _csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_push_then_describe_from_the_command_line(tmp_path, platform_file):
    data = _csv(tmp_path / "churn.csv", {
        "tenure": [1, 5, 12, 30, 2, "", 8, 40, 3, "x"],
        "charges": [20.5, 70.1, 50.0, 99.9, 10.0, 65.2, 33.3, 80.0, 25.0, 45.0],
        "churned": ["Yes", "No", "No", "No", "Yes", "No", "No", "No", "Yes", "No"],
    })
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "datasets" / "churn").mkdir(parents=True)
    (tmp_path / "store" / "datasets" / "churn" / "training.yaml").write_text("label_column: churned\nlabels: [No, Yes]\n")
    runner = CliRunner()
    pushed = runner.invoke(app, ["datasets", "push", str(data), "--model", "churn", "--config", str(platform_file)])
    assert pushed.exit_code == 0, pushed.output
    assert "datasets/churn/churn.csv" in pushed.output
    store = ObjectStore(str(tmp_path / "store"))
    assert store.read_bytes("datasets/churn/churn.csv") == data.read_bytes()

    again = runner.invoke(app, ["datasets", "push", str(data), "--model", "churn", "--config", str(platform_file)])
    assert again.exit_code == 1 and "--replace" in again.output

    described = runner.invoke(app, ["datasets", "describe", "churn", "--config", str(platform_file)])
    assert described.exit_code == 0, described.output
    out = described.output
    assert "tenure" in out and "charges" in out and "float" in out
    assert "int; may be missing" in out  # tenure's empty cell is a missing value, kept
    assert "No: 6" in out and "Yes: 3" in out and "33.3%" in out
    assert "quarantined: 1" in out and "line 11" in out and "line 7" not in out  # the "x" cell only


def test_describe_names_missing_values_per_column(tmp_path):
    store = ObjectStore(str(tmp_path / "store"))
    store.write_bytes("datasets/m/a.csv", b"a,b,label\n1,,0\n2,3,1\n,4,0\n5,6,1\n")
    description = describe_dataset(store, "m")
    assert description.missing == {"a": 1, "b": 1, "label": 0}
    assert description.rows_read == 4 and description.rows_quarantined == 0  # both may be missing: kept
    assert [f.missing for f in description.features] == [True, True]
    assert description.label_counts == {"negative": 2, "positive": 2}


def test_describe_says_which_columns_are_left_out(tmp_path):
    store = ObjectStore(str(tmp_path / "store"))
    rows = "".join(f"{i},{i % 3}.5,{i % 2}\n" for i in range(60))
    store.write_bytes("datasets/m/a.csv", ("row_id,x,label\n" + rows).encode())
    from aprendiz.training.describe import format_description

    text = format_description(describe_dataset(store, "m"))
    assert "row_id" in text and "left out: an id: 60 distinct integers in 60 rows" in text


def test_describe_of_nothing_says_so(tmp_path, platform_file):
    result = CliRunner().invoke(app, ["datasets", "describe", "empty", "--config", str(platform_file)])
    assert result.exit_code == 1 and "no data rows" in result.output


def test_push_refuses_a_file_that_is_not_a_dataset(tmp_path, platform_file):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = CliRunner().invoke(app, ["datasets", "push", str(notes), "--model", "m", "--config", str(platform_file)])
    assert result.exit_code == 2 and "CSV, Parquet or JSON Lines" in result.output


def test_a_folder_of_images_is_pushed_described_and_trained_from_the_command_line(tmp_path):
    """The issue's whole path: images on disk, a folder per label, to a promoted image model."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.training.images import digits_images

    folder = tmp_path / "digits"
    for n, item in enumerate(digits_images()[:300]):
        (folder / (item.label or "unlabelled")).mkdir(parents=True, exist_ok=True)
        (folder / (item.label or "unlabelled") / f"{n}.png").write_bytes(item.data)
    (folder / "unlabelled").mkdir()
    (folder / "unlabelled" / "extra.png").write_bytes(digits_images()[400].data)
    (folder / "notes.txt").write_text("not pushed")
    platform_file = tmp_path / "aprendiz.yaml"
    platform_file.write_text(f"store: {{url: {tmp_path / 'store'}}}\nclassifiers: [{{name: digits}}]\n")
    store = ObjectStore(str(tmp_path / "store"))
    store.write_bytes("datasets/digits/training.yaml", b"labels: [other, zero]\nimage: {channels: gray, resize: 32, "
                      b"crop: 32, mean: [0.25], std: [0.35]}\ncandidates:\n  - {name: cnn, algorithm: small_cnn, "
                      b"params: {epochs: 8}}\n")
    runner = CliRunner()
    pushed = runner.invoke(app, ["datasets", "push", str(folder), "--model", "digits", "--config", str(platform_file)])
    assert pushed.exit_code == 0 and "wrote 301 files" in pushed.output, pushed.output
    assert not store.exists("datasets/digits/notes.txt")
    described = runner.invoke(app, ["datasets", "describe", "digits", "--config", str(platform_file)])
    assert described.exit_code == 0, described.output
    assert "float32 [1, 32, 32] per image; 1 unlabelled" in described.output and "zero: 31" in described.output
    trained = runner.invoke(app, ["train", "--model", "digits", "--config", str(platform_file)])
    assert trained.exit_code == 0, trained.output
    assert "promoted" in trained.output and "cnn" in trained.output
    registry = ModelRegistry(store)
    assert registry.card("digits", registry.champion("digits").version).kind == "image"
