"""The platform's JSON answer: a Starlette ``JSONResponse`` serialised by orjson.

orjson writes a small answer several times faster than the standard library's ``json`` (it
is one of the per-request costs the entrance took out, docs/benchmarks.md). It also writes
numpy numbers and arrays, and refuses what is not JSON instead of guessing.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
