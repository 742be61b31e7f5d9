"""The base of every schema the platform reads (platform config, model cards, training config):
an unknown field is an error, so a typo in a YAML file is refused by name instead of ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
