"""aprendiz.training.distributed without Ray: the blocks every worker encodes, the hashed split, the
shard listing and the distributed config. The run itself, on a real 2-node Ray cluster, is in
tests/unit/test_training_ray.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aprendiz.registry import Feature
from aprendiz.store import ObjectStore
from aprendiz.training.config import TrainingConfig, TrainingConfigError
from aprendiz.training.dataset import DatasetError
from aprendiz.training.distributed import (
    TEST,
    TRAIN,
    VALIDATION,
    booster_params,
    check_capacity,
    encode_block,
    parquet_keys,
    row_hashes,
    split_of,
)

FEATURES = [Feature(name="a"), Feature(name="plan", type="category", levels=["basic", "gold"], missing=True)]
ENCODE = {"features": FEATURES, "label_column": "label", "labels": ("No", "Yes"), "seed": 0,
          "test_fraction": 0.2, "validation_fraction": 0.2}


def test_a_block_is_encoded_with_its_invalid_rows_kept_for_the_quarantine():
    frame = pd.DataFrame({"a": ["1.5", "x", "2"], "plan": ["gold", "basic", None], "label": ["Yes", "No", "No"]})
    block = encode_block(frame, **ENCODE)
    assert block["y"].tolist() == [1, 0, -1]  # the valid rows first, then the invalid one
    assert block["x"].shape == (3, 3) and block["x"][0].tolist() == [1.5, 0.0, 1.0]
    assert block["quarantine"][:2].tolist() == ["", ""] and "'x' is not a number" in block["quarantine"][2]
    assert block["split"][2] == -1 and set(block["split"][:2]) <= {TRAIN, VALIDATION, TEST}


def test_the_split_is_a_seeded_hash_of_the_row_whatever_the_sharding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 4)).astype(np.float32)
    y = (rng.random(20_000) < 0.03).astype(np.int64)
    whole = split_of(row_hashes(x, y, 0), 0.2, 0.2)
    pieces = np.concatenate([split_of(row_hashes(x[i:i + 777], y[i:i + 777], 0), 0.2, 0.2)
                             for i in range(0, 20_000, 777)])
    assert (whole == pieces).all()  # the same rows, in blocks of any size: the same split
    assert not (split_of(row_hashes(x, y, 1), 0.2, 0.2) == whole).all()  # another seed, another split
    shares = np.bincount(whole, minlength=3) / len(whole)
    assert shares[TEST] == pytest.approx(0.2, abs=0.01) and shares[VALIDATION] == pytest.approx(0.2, abs=0.01)
    positives = np.bincount(whole[y == 1], minlength=3) / y.sum()  # stratified in expectation
    assert positives[TEST] == pytest.approx(0.2, abs=0.06)
    twice = np.vstack([x[:5], x[:5]])  # a duplicate row never crosses splits
    hashes = row_hashes(twice, np.zeros(10, dtype=np.int64), 0)
    assert (hashes[:5] == hashes[5:]).all()


def test_only_parquet_shards_are_read(tmp_path):
    store = ObjectStore(str(tmp_path))
    with pytest.raises(DatasetError, match="no Parquet shards"):
        parquet_keys(store, "big")
    store.write_bytes("datasets/big/part-0.parquet", b"x")
    store.write_bytes("datasets/big/training.yaml", b"distributed: {}\n")
    assert parquet_keys(store, "big") == ["datasets/big/part-0.parquet"]
    store.write_bytes("datasets/big/extra.csv", b"a,label\n1,0\n")
    with pytest.raises(DatasetError, match="convert them to Parquet"):
        parquet_keys(store, "big")


def test_the_distributed_config_takes_xgboost_only_and_maps_its_params():
    config = TrainingConfig.model_validate({"distributed": {"workers": 4}})
    assert config.distributed is not None and config.distributed.candidate.algorithm == "xgboost"
    with pytest.raises(ValueError, match="use xgboost"):
        TrainingConfig.model_validate({"distributed": {"candidate": {"name": "k", "algorithm": "knn"}}})
    with pytest.raises(ValueError, match="search grid"):
        TrainingConfig.model_validate({"distributed": {"candidate": {
            "name": "x", "algorithm": "xgboost", "search": {"max_depth": [3, 6]}}}})
    native, rounds = booster_params({"n_estimators": 30, "learning_rate": 0.2, "scale_pos_weight": 9}, 7, 2)
    assert rounds == 30 and native["learning_rate"] == 0.2 and native["scale_pos_weight"] == 9
    assert native["seed"] == 7 and native["nthread"] == 2 and native["tree_method"] == "hist"
    assert "n_jobs" not in native and "random_state" not in native and None not in native.values()


def test_workers_the_local_ray_cannot_hold_are_refused_not_waited_for():
    """Ray Train waits for its workers' CPUs to appear: on a fixed-size Ray (a local one) that is a
    hang, so a run asking for more than the Ray holds is refused, naming the fields to change."""
    config = TrainingConfig.model_validate({"distributed": {"workers": 4, "cpus_per_worker": 2}})
    assert config.distributed is not None
    with pytest.raises(TrainingConfigError, match=r"distributed.workers × cpus_per_worker = 4 × 2.0 = 8 CPUs.*2"):
        check_capacity(config.distributed, cluster_cpus=2.0, fixed_size=True)
    check_capacity(config.distributed, cluster_cpus=8.0, fixed_size=True)
    check_capacity(config.distributed, cluster_cpus=2.0, fixed_size=False)  # a cluster may scale up: logged only
