"""`helm test`: the release answers /v1/models, a chat completion and a classifier prediction.

Standard library only. Reads BASE_URL, CHAT_MODEL, CLASSIFIER (empty: skipped) and API_KEY
(optional, sent as a bearer token) from the environment; exits 1 naming the failed call.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE_URL = os.environ["BASE_URL"].rstrip("/")
HEADERS = {"Content-Type": "application/json"}
if os.environ.get("API_KEY"):
    HEADERS["Authorization"] = f"Bearer {os.environ['API_KEY']}"


def call(method: str, path: str, body: dict | None = None, attempts: int = 5) -> dict:
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(BASE_URL + path, data=data, method=method, headers=HEADERS)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code < 500 or attempt == attempts:
                raise SystemExit(f"FAIL {method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            if attempt == attempts:
                raise SystemExit(f"FAIL {method} {path}: {exc}") from None
        time.sleep(3 * attempt)
    raise AssertionError("unreachable")


def main() -> int:
    models = [m["id"] for m in call("GET", "/v1/models")["data"]]
    print(f"ok   GET /v1/models: {models}")

    chat_model = os.environ.get("CHAT_MODEL", "")
    if chat_model:
        if chat_model not in models:
            raise SystemExit(f"FAIL /v1/models does not list the generator {chat_model!r}")
        answer = call("POST", "/v1/chat/completions", {
            "model": chat_model, "messages": [{"role": "user", "content": "Hola"}], "max_tokens": 16,
        })
        text = answer["choices"][0]["message"]["content"]
        if not text or answer["usage"]["completion_tokens"] < 1:
            raise SystemExit(f"FAIL chat completion from {chat_model} is empty: {answer}")
        print(f"ok   POST /v1/chat/completions ({chat_model}): {text[:60]!r}")

    classifier = os.environ.get("CLASSIFIER", "")
    if classifier:
        metadata = call("GET", f"/v2/models/{classifier}")
        tensor = metadata["inputs"][0]
        instance = "hola, ¿qué tal?" if tensor["datatype"] == "BYTES" else [0.5] * int(tensor["shape"][-1])
        prediction = call("POST", f"/v1/models/{classifier}:predict", {"instances": [instance]})["predictions"][0]
        if not 0.0 <= prediction["probability"] <= 1.0 or not prediction.get("model_version"):
            raise SystemExit(f"FAIL prediction from {classifier} is malformed: {prediction}")
        print(f"ok   POST /v1/models/{classifier}:predict: {prediction}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
