"""The classifier server in-process (fast tier): ClassifierServer built as Serve builds it (its async
constructor awaited), over a real local registry whose versions the training job trained, with real
onnxruntime and Serve's real ``@serve.batch``. No Ray cluster: the ingress's handle calls become
method calls, and the one thing a replica would give, ``serve.get_replica_context()`` (which
``@serve.batch`` reads its deployment's ``max_ongoing_requests`` from), is stood in for."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from aprendiz.errors import InvalidRequestError
from aprendiz.registry import ModelRegistry
from aprendiz.services.classifier.deployment import ClassifierServer
from aprendiz.store import ObjectStore

NAME = "breast-cancer"


@pytest.fixture(autouse=True)
def _replica(replica_context):
    """Every server here is built as in a replica (the shared stand-in of tests/unit/conftest.py)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, job_training):
    """A store with a first champion, and a second version (another seed) not yet promoted."""
    root = tmp_path_factory.mktemp("classifier-store")
    registry = ModelRegistry(ObjectStore(str(root)))
    first = job_training.train_builtin(registry, NAME)
    second = job_training.train_version(registry, NAME, seed=7, scratch=tmp_path_factory.mktemp("scratch"))
    return root, first, second


@pytest.fixture
def run(serve_loop):
    return serve_loop


@pytest.fixture
def rows():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data[:4].astype(np.float32)


async def _server(root, **model) -> ClassifierServer:
    server = ClassifierServer.__new__(ClassifierServer)
    await server.__init__(model={"name": NAME, "poll_interval_s": 0.05, **model}, store={"url": str(root)})
    return server


async def _until(predicate, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_v1_and_v2_answer_from_the_champion(trained, rows, run):
    root, first, _ = trained

    async def go():
        server = await _server(root)
        v1 = await server.predict_v1({"instances": rows.tolist()})
        body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
        v2 = await server.infer_v2(json.dumps(body).encode(), None)
        return v1, v2, await server.ready(), await server.metadata_v2()

    v1, v2, ready, metadata = run(go())
    assert ready and {p["model_version"] for p in v1["predictions"]} == {first}
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["probability"]["data"] == pytest.approx([p["probability"] for p in v1["predictions"]], abs=1e-6)
    assert [p["label"] for p in v1["predictions"]] == outputs["label"]["data"]
    assert len(metadata["inputs"]) >= 1


def test_the_replica_tunes_its_collector_as_configured(trained, run):
    import gc

    root, _, _ = trained

    async def go():
        server = ClassifierServer.__new__(ClassifierServer)
        await server.__init__(model={"name": NAME}, store={"url": str(root)}, gc_young_threshold=23_456)
        return gc.get_threshold()[0]

    assert run(go()) == 23_456


@pytest.mark.parametrize(("model", "metered"), [({}, "cpu"), ({"accelerator": "gpu"}, "gpu"),
                                                ({"accelerator": "gpu", "accelerator_type": "L4"}, "L4")])
def test_the_replica_meters_its_cost_under_its_accelerator(trained, run, monkeypatch, model, metered):
    """The cost series says what the replica runs on: its accelerator type, else cpu or gpu (on this
    machine a gpu classifier still serves, on onnxruntime's CPU provider)."""
    from aprendiz.services.classifier import deployment

    meters: list[dict] = []
    monkeypatch.setattr(deployment, "ReplicaCostMeter", lambda **kwargs: meters.append(kwargs))
    root, _, _ = trained

    async def go():
        server = await _server(root, **model)
        return await server.ready()

    assert run(go())
    assert [(m["kind"], m["accelerator"]) for m in meters] == [("classifier", metered)]


def test_bad_instances_are_a_typed_client_error(trained, run):
    root, _, _ = trained

    async def go():
        server = await _server(root)
        with pytest.raises(InvalidRequestError) as raised:
            await server.predict_v1({"instances": [["x"] * 30]})
        return raised.value

    error = run(go())
    assert "instances[0][0]" in error.message and "must be a number" in error.message


def test_a_promoted_version_takes_over_and_a_schema_change_is_refused(trained, rows, tmp_path, run):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from aprendiz.registry import Feature, ModelCard, new_version
    from aprendiz.training.onnx_export import export_onnx

    root, first, second = trained
    registry = ModelRegistry(ObjectStore(str(root)))
    x = rows[:, :10]
    narrow = ModelCard(name=NAME, version=new_version(), kind="tabular", features=[Feature(name=f"f{i}") for i in range(10)],
                       labels=("benign", "malignant"), data_fingerprint="test", algorithm="logistic_regression")
    registry.publish(narrow, export_onnx(make_pipeline(LogisticRegression()).fit(np.vstack([x, x]), [0, 1] * 4), 10))

    async def version_served(server) -> str:
        return (await server.predict_v1({"instances": rows[:1].tolist()}))["predictions"][0]["model_version"]

    async def go():
        server = await _server(root)
        assert await version_served(server) == first
        registry.promote(NAME, second, "a better seed")
        await _until(lambda: _is(version_served(server), second))
        registry.promote(NAME, narrow.version, "takes 10 features")
        await asyncio.sleep(0.5)  # several polls
        return await version_served(server)

    try:
        assert run(go()) == second  # the 30-feature version keeps serving
    finally:
        registry.promote(NAME, first, "back to the first champion")


def test_a_store_error_while_loading_a_version_is_retried_not_refused(trained, rows, run, monkeypatch):
    """A transient store failure (a reset connection) is not the version's fault: the next poll tries
    again and the version takes over; it is not counted as a refused version."""
    root, first, second = trained
    registry = ModelRegistry(ObjectStore(str(root)))
    failures = []
    real_load = ModelRegistry.load

    def flaky_load(self, name, version):
        if version == second and len(failures) < 3:
            failures.append(version)
            raise ConnectionResetError("the store reset the connection")
        return real_load(self, name, version)

    async def version_served(server) -> str:
        return (await server.predict_v1({"instances": rows[:1].tolist()}))["predictions"][0]["model_version"]

    async def go():
        server = await _server(root)
        monkeypatch.setattr(ModelRegistry, "load", flaky_load)
        registry.promote(NAME, second, "a better seed")
        await _until(lambda: _is(version_served(server), second))
        return server

    try:
        server = run(go())
    finally:
        registry.promote(NAME, first, "back to the first champion")
    assert len(failures) == 3
    assert second not in server._service._refused


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected


def test_feedback_is_in_the_store_before_the_answer(trained, rows, run):
    root, _, _ = trained
    registry = ModelRegistry(ObjectStore(str(root)))

    async def go():
        server = await _server(root)
        return await server.feedback({"instances": rows[:2].tolist(), "labels": ["malignant", 0]})

    answer = run(go())
    assert answer["accepted"] == 2
    records = [json.loads(line) for line in registry.store.read_bytes(answer["key"]).decode().splitlines()]
    assert [r["label"] for r in records] == [1, 0]


def test_a_champion_naming_a_missing_version_keeps_the_old_one_serving_until_it_arrives(trained, rows, tmp_path, run):
    """champion.json written before its version's files (a hand edit, a copy in the wrong order):
    the serving version keeps answering, and the named version takes over once its files are there."""
    root, first, second = trained
    registry = ModelRegistry(ObjectStore(str(root)))
    late = ModelRegistry(ObjectStore(str(tmp_path / "late")))
    artifact = registry.load(NAME, second)
    missing = "20990101T000000Z"

    async def version_served(server) -> str:
        return (await server.predict_v1({"instances": rows[:1].tolist()}))["predictions"][0]["model_version"]

    async def go():
        server = await _server(root)
        registry.store.write_json(f"models/{NAME}/champion.json", {"version": missing, "reason": "by hand"})
        await asyncio.sleep(0.5)  # several polls
        still = await version_served(server)
        ready = await server.ready()
        # The version's files arrive (published under the name the champion gives).
        late_card = artifact.card.model_copy(update={"version": missing})
        late.publish(late_card, artifact.onnx_bytes, artifact.files)
        registry.import_version(late, NAME, missing)
        await _until(lambda: _is(version_served(server), missing))
        return still, ready, server

    try:
        still, ready, server = run(go())
    finally:
        registry.promote(NAME, first, "back to the first champion")
    assert still == first and ready is True
    assert missing not in server._service._refused


def test_an_s3_outage_and_back_serving_continues_and_the_poll_recovers(trained, rows, run, monkeypatch):
    """A real S3 server (moto) stopped under a serving classifier: predictions go on from the
    loaded version; once the server is back, the next promotion is followed without a restart."""
    import socket

    from moto.server import ThreadedMotoServer

    root, first, second = trained
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    for variable, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="outage-test")
        local = ModelRegistry(ObjectStore(str(root)))
        registry = ModelRegistry(ObjectStore("s3://outage-test/store", storage_options=options))
        for version in (first, second):
            registry.import_version(local, NAME, version)
        registry.promote(NAME, first, "first")

        async def version_served(server) -> str:
            return (await server.predict_v1({"instances": rows[:1].tolist()}))["predictions"][0]["model_version"]

        async def go():
            nonlocal s3
            server = ClassifierServer.__new__(ClassifierServer)
            await server.__init__(model={"name": NAME, "poll_interval_s": 0.05},
                                  store={"url": "s3://outage-test/store", "endpoint_url": endpoint})
            assert await version_served(server) == first
            s3.stop()  # the outage: connections refused
            during = []
            for _ in range(20):
                during.append(await version_served(server))
                await asyncio.sleep(0.1)
            s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            s3.start()  # back, with its objects (moto keeps them in this process)
            await asyncio.to_thread(registry.promote, NAME, second, "after the outage")
            await _until(lambda: _is(version_served(server), second), timeout_s=60)
            return during

        assert set(run(go())) == {first}
    finally:
        s3.stop()


# -- an image model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lesions(tmp_path_factory, job_training):
    root = tmp_path_factory.mktemp("image-store")
    version = job_training.train_builtin(ModelRegistry(ObjectStore(str(root))), "lesions", "lesions")
    return root, version


def _lesion_pngs(count: int = 3) -> list[bytes]:
    from aprendiz.training.images import lesion_images

    return [item.data for item in lesion_images(count=count, labelled=count, seed=5)]


def test_an_image_model_answers_v1_b64_and_v2_binary_alike_and_bad_images_are_400s(lesions, run):
    import base64

    from kserve import InferInput, InferRequest

    root, version = lesions
    pngs = _lesion_pngs()

    async def go():
        server = await _server(root, name="lesions", image_limits={"max_bytes": 100_000, "max_pixels": 250_000})
        v1 = await server.predict_v1({"instances": [{"b64": base64.b64encode(p).decode()} for p in pngs]})
        tensor = InferInput(name="image", shape=[len(pngs)], datatype="BYTES")
        tensor.set_data_from_numpy(np.array(pngs, dtype=np.object_), binary_data=True)
        body, length = InferRequest(model_name="lesions", infer_inputs=[tensor], request_id="r").to_rest()
        v2 = await server.infer_v2(body, length)
        errors = []
        for bad in (b"GIF89a not a png", _big_png()):
            try:
                await server.predict_v1({"instances": [{"image_bytes": {"b64": base64.b64encode(bad).decode()}}]})
            except InvalidRequestError as exc:
                errors.append(exc.message)
        after = await server.predict_v1({"instances": [{"b64": base64.b64encode(pngs[0]).decode()}]})
        return v1, v2, errors, after, await server.metadata_v2()

    v1, v2, errors, after, metadata = run(go())
    assert {p["model_version"] for p in v1["predictions"]} == {version}
    probabilities = {o["name"]: o["data"] for o in v2["outputs"]}["probability"]
    assert probabilities == pytest.approx([p["probability"] for p in v1["predictions"]], abs=1e-6)
    assert "instances[0] cannot be decoded as PNG or JPEG" in errors[0]
    assert "instances[0] is 600x600 pixels; the limit is 250,000 pixels" in errors[1]
    assert after["predictions"][0]["probability"] == pytest.approx(v1["predictions"][0]["probability"], abs=1e-6)
    assert metadata["parameters"]["image"]["crop"] == 32


def _big_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (600, 600)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_feedback_is_stored_as_sent_and_an_undecodable_one_is_refused_whole(lesions, run):
    import base64

    root, _ = lesions
    registry = ModelRegistry(ObjectStore(str(root)))
    png = _lesion_pngs(1)[0]

    async def go():
        server = await _server(root, name="lesions")
        answer = await server.feedback({"instances": [{"b64": base64.b64encode(png).decode()}], "labels": ["lesion"]})
        try:
            await server.feedback({"instances": [{"b64": base64.b64encode(png).decode()},
                                                 {"b64": base64.b64encode(b"junk").decode()}], "labels": [1, 0]})
        except InvalidRequestError as exc:
            return answer, exc.message
        return answer, None

    answer, refused = run(go())
    (record,) = [json.loads(line) for line in registry.store.read_bytes(answer["key"]).decode().splitlines()]
    assert base64.b64decode(record["image"]) == png and record["label"] == 1
    assert refused and "instances[1]" in refused
    assert len([k for k in registry.store.list("feedback/lesions/") if k.endswith(".jsonl")]) == 1
