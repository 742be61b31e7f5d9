"""Shared test settings: where the repository and the default model are."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "var" / "models" / "aprendiz-tiny-chat"
DEFAULT_CONFIG = ROOT / "config" / "aprendiz.yaml"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The embedded default model that `make test` builds before pytest runs."""
    from aprendiz.training.tinyllm.build import is_built

    if not is_built(DEFAULT_MODEL):
        pytest.fail(f"{DEFAULT_MODEL} is not built: run `make model` (make test does it first)")
    return DEFAULT_MODEL


# -- classifiers: trained by the training job itself, with one candidate so it takes seconds ---------

# The job's configs for the shipped datasets with one quick candidate each (production runs the
# defaults: several candidates, MiniLM for text). The labels are those the seeded training.yaml names.
QUICK_TRAINING = {
    "breast-cancer": {"labels": ["benign", "malignant"],
                      "candidates": [{"name": "logistic_regression", "algorithm": "logistic_regression"}]},
    "es-or-en": {"labels": ["english", "spanish"],
                 "candidates": [{"name": "tfidf_logreg", "algorithm": "tfidf_logreg", "params": {"C": 10.0}}]},
    "credit": {"label_column": "default", "labels": ["No", "Yes"], "unseen_categories": "refuse",
               "candidates": [{"name": "gradient_boosting", "algorithm": "hist_gradient_boosting",
                               "params": {"max_iter": 50, "max_depth": 3}}]},
    # The synthetic lesion images (80 labelled), the small CNN: about 2 s.
    "lesions": {"labels": ["clear", "lesion"], "image": {"channels": "rgb", "resize": 36, "crop": 32},
                "candidates": [{"name": "small_cnn", "algorithm": "small_cnn", "params": {"epochs": 20}}]},
}


def train_builtin(registry, name: str, builtin: str = "breast-cancer", *, seed: int = 0,
                  training: dict | None = None) -> str:
    """Seed ``datasets/<name>/`` with a shipped dataset and train it through the job (one candidate,
    or ``training``'s); returns the promoted version. A registry that already has a champion of
    ``name`` gets a new version only when it beats it."""
    from aprendiz.training.config import TrainingConfig
    from aprendiz.training.dataset import seed_builtin
    from aprendiz.training.job import run_training

    seed_builtin(registry.store, name, builtin)
    config = (training or QUICK_TRAINING[builtin]) | {"seed": seed}
    result = run_training(registry, name, TrainingConfig.model_validate(config))
    assert result.promoted, result.reason
    return result.version


def train_version(registry, name: str, *, seed: int, scratch) -> str:
    """A new version of ``name`` in ``registry``, unpromoted: trained through the job (seed ``seed``)
    in a scratch registry at the folder ``scratch``, then imported."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    source = ModelRegistry(ObjectStore(str(scratch)))
    return registry.import_version(source, name, train_builtin(source, name, seed=seed))


class JobTraining:
    """The two helpers above, as a fixture (test modules cannot import conftest)."""

    train_builtin = staticmethod(train_builtin)
    train_version = staticmethod(train_version)


@pytest.fixture(scope="session")
def job_training() -> type[JobTraining]:
    return JobTraining


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory):
    """breast-cancer trained by the job into a local store: (registry, name, version)."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    registry = ModelRegistry(ObjectStore(str(tmp_path_factory.mktemp("trained"))))
    return registry, "breast-cancer", train_builtin(registry, "breast-cancer")


# -- object store: a real S3-protocol server on loopback (moto), never AWS -------------------

S3_REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server on 127.0.0.1 and a free port for the whole session; yields its endpoint URL."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """Dummy credentials and the moto endpoint in the standard AWS variables (no real profile, no real AWS)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh, empty bucket on the moto server; yields its name."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:20]}"
    client = boto3.client(
        "s3", endpoint_url=s3_env, region_name=S3_REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_storage_options(s3_env) -> dict:
    """Explicit s3fs options for the moto server (what a MinIO deployment would pass)."""
    return {"endpoint_url": s3_env, "key": "testing", "secret": "testing", "client_kwargs": {"region_name": S3_REGION}}


@pytest.fixture
def s3_store(s3_bucket, s3_storage_options):
    """An ObjectStore rooted at a prefix of a fresh moto bucket."""
    from aprendiz.store import ObjectStore

    return ObjectStore(f"s3://{s3_bucket}/root", storage_options=s3_storage_options)


@pytest.fixture
def local_store(tmp_path):
    """An ObjectStore rooted at a new folder under tmp_path."""
    from aprendiz.store import ObjectStore

    return ObjectStore(str(tmp_path / "store"))


@pytest.fixture(params=["local", "s3"])
def store(request):
    """The same tests against a local folder and an S3-protocol server."""
    return request.getfixturevalue(f"{request.param}_store")
