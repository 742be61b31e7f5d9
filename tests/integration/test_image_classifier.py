"""An image classifier through the one ingress, as every classifier: the lesions model the training
job made from a folder of images, answering KServe V1 (base64 images in KServe's three shapes) and V2
(kserve's own client sending the binary extension), refusing bad images with a 400 that names them
while it keeps serving, storing feedback before it answers, and swapping to a promoted version."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "lesions"


@pytest.fixture(scope="module")
def http(platform) -> httpx.Client:
    with httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def images():
    from aprendiz.training.images import lesion_images

    items = lesion_images(count=12, labelled=12, seed=21)
    return [item.data for item in items], [item.label for item in items]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _expected(registry, pngs) -> tuple[str, np.ndarray]:
    """The champion's version and its probabilities for ``pngs``, computed here as serving should."""
    from aprendiz.images import ImageLimits, to_pixels
    from aprendiz.training.image_candidates import onnx_image_probabilities

    artifact = registry.load(MODEL, registry.champion(MODEL).version)
    pixels = to_pixels(pngs, artifact.card.image, ImageLimits())
    return artifact.card.version, onnx_image_probabilities(artifact.onnx_bytes, pixels)[:, 1]


def test_v1_takes_kserves_three_image_shapes_and_answers_as_the_model_does(http, stores, images):
    pngs, labels = images
    version, expected = _expected(stores.local, pngs[:3])
    body = {"instances": [{"b64": _b64(pngs[0])}, {"image": {"b64": _b64(pngs[1])}},
                          {"image_bytes": {"b64": _b64(pngs[2])}, "key": "3"}]}
    response = http.post(f"/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["probability"] for p in predictions] == pytest.approx(expected.tolist(), abs=1e-5)
    assert {p["model_version"] for p in predictions} == {version}


def test_v2_with_kserves_own_client_in_the_binary_extension(platform, stores, images):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    pngs, labels = images
    _, expected = _expected(stores.local, pngs)

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        try:
            assert await client.is_model_ready(platform.base_url, MODEL, headers=platform.headers)
            tensor = InferInput(name="image", shape=[len(pngs)], datatype="BYTES")
            tensor.set_data_from_numpy(np.array(pngs, dtype=np.object_), binary_data=True)
            request = InferRequest(model_name=MODEL, infer_inputs=[tensor], request_id="img-1")
            return await client.infer(platform.base_url, request, model_name=MODEL, headers=platform.headers)
        finally:
            await client.close()

    outputs = {o.name: o for o in asyncio.run(run()).outputs}
    assert outputs["probability"].as_numpy() == pytest.approx(expected, abs=1e-5)
    truth = np.asarray([label == "lesion" for label in labels])
    assert (np.asarray([label == "lesion" for label in outputs["label"].data]) == truth).mean() >= 0.75


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    """A 600-byte PNG that declares 40,000 x 40,000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 5001 * 4))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    "instance, words",
    [
        ({"b64": _b64(b"these are not the bytes of an image")}, ["instances[0]", "cannot be decoded as PNG or JPEG"]),
        ({"b64": "@@not base64@@"}, ["instances[0].b64", "not valid base64"]),
        ({"b64": _b64(_png(600, 600))}, ["instances[0]", "600x600 pixels", "262,144"]),
        ({"b64": _b64(_bomb())}, ["instances[0]", "decompression bomb"]),
        ({"b64": _b64(b"\x89PNG" + bytes(70_000))}, ["instances[0].b64", "limit is 65,536"]),
        ([0.1, 0.2], ["instances[0]", '{"b64": "..."}']),
    ],
)
def test_bad_images_get_a_400_that_says_which_and_what(http, instance, words):
    response = http.post(f"/v1/models/{MODEL}:predict", json={"instances": [instance]})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message, message


def test_a_v2_tensor_of_the_wrong_shape_is_a_400(http):
    body = {"inputs": [{"name": "pixels", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": [0.0] * 2352}]}
    response = http.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 400 and "[N, 3, 32, 32]" in response.json()["error"]["message"]


def test_still_serving_after_bad_images_and_metadata_names_the_transform(http, images):
    assert http.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": _b64(images[0][0])}]}).status_code == 200
    metadata = http.get(f"/v2/models/{MODEL}").json()
    assert metadata["parameters"]["kind"] == "image" and metadata["parameters"]["placement"] == "replica"
    assert {i["datatype"] for i in metadata["inputs"]} == {"BYTES", "FP32"}


def test_image_feedback_is_stored_before_the_answer_and_a_promoted_version_takes_over(http, stores, images,
                                                                                        job_training, tmp_path):
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    pngs, labels = images
    response = http.post(f"/v1/models/{MODEL}/feedback",
                         json={"instances": [{"b64": _b64(p)} for p in pngs[:2]], "labels": labels[:2]})
    assert response.status_code == 200, response.text
    records = [r for r in stores.local.read_feedback(MODEL) if r.image is not None]
    assert [base64.b64decode(r.image) for r in records[-2:]] == pngs[:2]

    scratch = ModelRegistry(ObjectStore(str(tmp_path / "scratch")))
    new = stores.local.import_version(scratch, MODEL, job_training.train_builtin(scratch, MODEL, MODEL, seed=3))
    stores.local.promote(MODEL, new, reason="test: a new version")
    deadline = time.monotonic() + 60
    while True:
        answer = http.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": _b64(pngs[0])}]}).json()
        if answer["model_version"] == new:
            break
        assert time.monotonic() < deadline, f"still serving {answer['model_version']}"
        time.sleep(0.5)
