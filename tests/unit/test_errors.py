"""aprendiz.errors: one table from domain errors to OpenAI-shaped HTTP answers."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

from aprendiz.errors import (
    ERROR_TABLE,
    AprendizError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelRejectedError,
    ServiceUnavailableError,
    install_error_handlers,
)


class Body(BaseModel):
    model: str
    count: int


@pytest.fixture()
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(body: Body):
        return body

    @app.get("/raise/{kind}")
    async def raise_(kind: str):
        errors = {
            "model": ModelNotFoundError("no model x", param="model"),
            "invalid": InvalidRequestError("bad temperature", param="temperature"),
            "busy": ServiceUnavailableError("queue full"),
            "http": HTTPException(status_code=429, detail="slow down", headers={"Retry-After": "3"}),
            "unmapped": type("Unmapped", (AprendizError,), {})("who knows"),
            "engine": ModelRejectedError("prompt of 9000 tokens over the 8192 context", status=413),
            "bug": KeyError("internal detail: /secret/path"),
        }
        raise errors[kind]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "kind, status, code",
    [("model", 404, "model_not_found"), ("invalid", 400, "invalid_parameter"), ("busy", 503, "service_unavailable")],
)
def test_domain_errors_follow_the_table(client, kind, status, code):
    response = client.get(f"/raise/{kind}")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_error_body_shape(client):
    error = client.get("/raise/model").json()["error"]
    assert error == {"message": "no model x", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


def test_every_table_entry_is_a_client_or_server_status():
    assert all(400 <= status < 600 for status, _, _ in ERROR_TABLE.values())


def test_unmapped_domain_error_is_a_500_not_a_crash(client):
    assert client.get("/raise/unmapped").status_code == 500


def test_http_exceptions_keep_status_and_headers(client):
    response = client.get("/raise/http")
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_validation_errors_are_400_naming_the_field(client):
    response = client.post("/echo", json={"model": "m", "count": "many"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "count"
    assert error["message"].startswith("Invalid request: count:")


def test_invalid_json_is_400_saying_so(client):
    response = client.post("/echo", content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_an_engines_own_client_error_keeps_its_status_and_message(client):
    response = client.get("/raise/engine")
    assert response.status_code == 413
    assert response.json()["error"] == {"message": "prompt of 9000 tokens over the 8192 context",
                                        "type": "invalid_request_error", "param": None, "code": "invalid_parameter"}


def test_an_unexpected_error_is_a_500_that_shows_nothing_internal(client, caplog):
    response = client.get("/raise/bug", headers={"x-request-id": "req-7"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "req-7" in error["message"]
    assert "secret" not in response.text and "KeyError" not in response.text
    assert "secret" in caplog.text  # the log has it
