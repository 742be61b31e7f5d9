"""The entrance's API document (``/openapi.json``): what each route takes and every answer it gives.

The hot routes read their bodies themselves (no pydantic model per request), so FastAPI cannot
infer their bodies; they are written here as JSON Schema, with the platform's own model names as
the allowed values, so Swagger UI and a fuzzer (tests/unit/test_ingress_fuzz.py) send real
requests. Every operation lists the errors it can answer, all in OpenAI's shape
(:mod:`aprendiz.errors`); FastAPI's default 422 is gone, since a validation failure is a 400 here.
The OpenAI bodies are documented by their common fields; others pass through to the engine.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}

_ERROR_REASONS = {
    400: "The request is malformed; the message names the field.",
    401: "No API key, or an unknown or revoked one (keys on).",
    403: "The key may not call this model (or post feedback to it).",
    404: "No such model.",
    413: "The body is over ingress.max_body_bytes.",
    429: "The key is over a limit; Retry-After says when to try again.",
    500: "An unexpected error; the message names the request id, nothing internal.",
    502: "The rented model's provider failed.",
    503: "The model cannot take the request now (not loaded, queue full); Retry-After says when to retry.",
    504: "The rented model's provider did not answer in time.",
}
_MODEL_ERRORS = (400, 401, 403, 404, 413, 429, 500, 503)
_NUMBER = {"type": "number"}
_V2_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                 "FP16", "FP32", "FP64", "BYTES"]


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _errors(*statuses: int) -> dict[int, dict[str, Any]]:
    return {status: _json(ERROR, _ERROR_REASONS[status]) for status in statuses}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _path_name(names: list[str], what: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": names} if names else {"type": "string"}
    return {"parameters": [{"name": "name", "in": "path", "required": True, "schema": schema,
                            "description": f"The {what}'s name."}]}


_INSTANCE = {"anyOf": [
    {"type": "array", "items": _NUMBER, "description": "A tabular row: the features in the card's order."},
    {"type": "object", "additionalProperties": {"anyOf": [_NUMBER, {"type": "string"}]},
     "description": "A row keyed by feature name, or a text model's {\"text\": \"...\"}."},
    {"type": "string", "description": "A text model's instance."},
]}
V1_PREDICT = _obj(["instances"], instances={"type": "array", "minItems": 1, "items": _INSTANCE})
V1_FEEDBACK = _obj(
    ["instances", "labels"],
    instances={"type": "array", "minItems": 1, "items": _INSTANCE},
    labels={"type": "array", "items": {"anyOf": [{"type": "integer", "enum": [0, 1]}, {"type": "string"}]},
            "description": "One per instance: 0, 1 or one of the model's two labels."},
    prediction_ids={"type": "array", "items": {"type": ["string", "null"]}},
)
V1_PREDICTIONS = _obj(
    ["predictions", "model_version"],
    predictions={"type": "array", "items": _obj(["probability", "label", "threshold", "model_version"],
                                                probability=_NUMBER, label={"type": "string"},
                                                threshold=_NUMBER, model_version={"type": "string"})},
    model_version={"type": "string"},
)
FEEDBACK_ACCEPTED = _obj(["accepted", "key", "model_version"], accepted={"type": "integer"}, key={"type": "string"},
                         model_version={"type": "string"})
_TENSOR = _obj(["name", "shape", "datatype", "data"], name={"type": "string"},
               shape={"type": "array", "items": {"type": "integer"}}, datatype={"type": "string", "enum": _V2_DATATYPES},
               data={"type": "array"}, parameters={"type": "object"})
V2_INFER = _obj(["inputs"], id={"type": "string"}, parameters={"type": "object"},
                inputs={"type": "array", "minItems": 1, "items": _TENSOR},
                outputs={"type": "array", "items": _obj(["name"], name={"type": "string"})})
V2_RESPONSE = _obj(["model_name", "outputs"], model_name={"type": "string"}, model_version={"type": "string"},
                   id={"type": "string"}, parameters={"type": "object"}, outputs={"type": "array", "items": _TENSOR})
_TENSOR_META = _obj(["name", "datatype", "shape"], name={"type": "string"}, datatype={"type": "string"},
                    shape={"type": "array", "items": {"type": "integer"}})
V2_METADATA = _obj(["name", "versions", "platform", "inputs", "outputs"], name={"type": "string"},
                   versions={"type": "array", "items": {"type": "string"}}, platform={"type": "string"},
                   inputs={"type": "array", "items": _TENSOR_META}, outputs={"type": "array", "items": _TENSOR_META},
                   parameters={"type": "object"})
V2_MODEL_READY = _obj(["name", "ready"], name={"type": "string"}, ready={"type": "boolean"})
_USAGE = _obj(["prompt_tokens", "completion_tokens", "total_tokens"], prompt_tokens={"type": "integer"},
              completion_tokens={"type": "integer"}, total_tokens={"type": "integer"})
_GENERATED = _obj(["id", "object", "created", "model", "choices"], id={"type": "string"}, object={"type": "string"},
                  created={"type": "integer"}, model={"type": "string"},
                  choices={"type": "array", "items": {"type": "object"}}, usage={"anyOf": [_USAGE, {"type": "null"}]})


# One server-sent event of a stream: a chunk as JSON (with the usage last when asked), then "[DONE]";
# the cost rides in a comment line (": x-aprendiz-cost-usd=..."), which is not an event.
_EVENT = _obj(["data"], data={"type": "string", "description": "A chunk (JSON), or [DONE]."},
              event={"type": "string"}, id={"type": "string"})


def _generation_request(models: list[str], chat: bool) -> dict[str, Any]:
    adapter = {"type": "string", "pattern": "^[^:]+:.+$", "description": "A hosted model's LoRA adapter: <model>:<adapter>."}
    model: dict[str, Any] = {"anyOf": [{"type": "string", "enum": models}, adapter]} if models else {"type": "string"}
    common = {
        "model": model,
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "stream": {"type": "boolean"},
        "stream_options": _obj([], include_usage={"type": "boolean"}),
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
        "seed": {"type": "integer"},
        "n": {"type": "integer", "minimum": 1},
    }
    if chat:
        message = _obj(["role", "content"], role={"type": "string", "enum": ["system", "user", "assistant"]},
                       content={"type": "string"})
        return _obj(["model", "messages"], messages={"type": "array", "minItems": 1, "items": message}, **common)
    return _obj(["model", "prompt"], prompt={"type": "string"}, **common)


EMBEDDINGS = _obj(
    ["object", "data", "model", "usage"], object={"type": "string", "enum": ["list"]}, model={"type": "string"},
    data={"type": "array", "items": _obj(
        ["object", "index", "embedding"], object={"type": "string"}, index={"type": "integer"},
        embedding={"anyOf": [{"type": "array", "items": _NUMBER},
                             {"type": "string", "description": "base64 of little-endian float32"}]})},
    usage=_obj(["prompt_tokens", "total_tokens"], prompt_tokens={"type": "integer"}, total_tokens={"type": "integer"}),
)


def _embedding_request(models: list[str]) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1}
    return _obj(
        ["model", "input"],
        model={"type": "string", "enum": models} if models else {"type": "string"},
        input={"anyOf": [text, {"type": "array", "minItems": 1, "items": text}]},
        encoding_format={"type": "string", "enum": ["float", "base64"]},
        dimensions={"type": "integer", "minimum": 1},
        user={"type": "string"},
    )


def _generation_answer() -> dict[str, Any]:
    return {"description": "The completion; with `stream: true`, server-sent events ending with `data: [DONE]`.",
            "content": {"application/json": {"schema": _GENERATED}, "text/event-stream": {"schema": _EVENT}}}


class ApiDocument:
    """The documentation of each endpoint (keyword arguments for FastAPI's route decorators), for
    a platform serving these generators and classifiers."""

    def __init__(self, generators: list[str], classifiers: list[str], embedders: list[str] | None = None):
        self.generators = sorted(generators)
        self.classifiers = sorted(classifiers)
        self.embedders = sorted(embedders or [])

    def operation(self, endpoint: str) -> dict[str, Any]:
        named = _path_name(self.classifiers, "classifier")
        model_errors = _errors(*_MODEL_ERRORS)
        docs: dict[str, dict[str, Any]] = {
            "classifier_predict_v1": {"responses": {200: _json(V1_PREDICTIONS), **model_errors},
                                      "openapi_extra": _body(V1_PREDICT) | named},
            "classifier_feedback": {"responses": {200: _json(FEEDBACK_ACCEPTED), **model_errors},
                                    "openapi_extra": _body(V1_FEEDBACK) | named},
            "v2_live": {"responses": {200: _json(_obj(["live"], live={"type": "boolean"}))}},
            "v2_ready": {"responses": {200: _json(_obj(["ready"], ready={"type": "boolean"})),
                                       503: _json(_obj(["ready"], ready={"type": "boolean"}), "A classifier is not ready.")}},
            "v2_model_ready": {"responses": {200: _json(V2_MODEL_READY), **model_errors,
                                             503: {"description": "Not ready (not loaded yet), or unavailable.",
                                                   "content": {"application/json": {"schema": {
                                                       "anyOf": [V2_MODEL_READY, ERROR]}}}}},
                               "openapi_extra": named},
            "v2_model_metadata": {"responses": {200: _json(V2_METADATA), **model_errors}, "openapi_extra": named},
            "v2_infer": {"responses": {200: _json(V2_RESPONSE), **model_errors}, "openapi_extra": _body(V2_INFER) | named},
            "models": {"responses": _errors(401, 429, 500)},
            "model_data": {"responses": model_errors},
            "completions": {"responses": {200: _generation_answer(), **_errors(*_MODEL_ERRORS, 502, 504)},
                            "openapi_extra": _body(_generation_request(self.generators, chat=False))},
            "chat": {"responses": {200: _generation_answer(), **_errors(*_MODEL_ERRORS, 502, 504)},
                     "openapi_extra": _body(_generation_request(self.generators, chat=True))},
            "embeddings": {"responses": {200: _json(EMBEDDINGS), **_errors(*_MODEL_ERRORS, 502, 504)},
                           "openapi_extra": _body(_embedding_request(self.embedders))},
        }
        return docs.get(endpoint, {})

    @staticmethod
    def finish(app: FastAPI) -> None:
        """Take FastAPI's 422 (and its schemas) out of the document (this API answers 400 instead), and
        keep one definition per parameter."""
        build = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is not None:
                return app.openapi_schema
            document = build()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    # FastAPI appends openapi_extra's parameters to its own: the documented one wins.
                    parameters = {(p["name"], p["in"]): p for p in operation.get("parameters", [])}
                    if parameters:
                        operation["parameters"] = list(parameters.values())
            schemas = document.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = document
            return document

        app.openapi = openapi  # type: ignore[method-assign]
