"""Process settings, read from the environment (prefix ``APRENDIZ_``) in one place.

Nothing reads the environment at import time: callers build ``Settings()`` once
(the CLI does) and pass it, or the values they need, down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """How this process runs the platform (not which models: that is the config file)."""

    model_config = SettingsConfigDict(env_prefix="APRENDIZ_", extra="ignore")

    config_file: Path = Field(Path("config/aprendiz.yaml"), description="Platform config (models to serve).")
    host: str = Field("127.0.0.1", description="Address the Serve HTTP proxy binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the Serve HTTP proxy.")
    ray_address: str | None = Field(
        None, description="Address of an existing Ray cluster; unset starts a local one for this process."
    )
    ray_num_cpus: int = Field(
        8,
        ge=1,
        description=(
            "Logical CPUs of a local Ray cluster. More than the machine's cores on purpose: the ingress, "
            "the proxy and each engine replica each hold a CPU slot, and 2 real cores would leave the "
            "ingress unscheduled."
        ),
    )
    serve_ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description=(
            "Ray Serve's ingress for a local cluster: `haproxy` runs Serve's high-throughput mode (HAProxy in "
            "front of the ingress replicas' own HTTP servers, gRPC between replicas; benchmarks/ measured it "
            "4x the classifier requests/s of the Python proxy); `proxy` is Serve's Python HTTP proxy. A "
            "cluster given by `ray_address` keeps whatever its nodes were started with (the chart sets it)."
        ),
    )
    metrics_export_port: int = Field(8080, ge=1, le=65535, description="Port of Ray's Prometheus metrics endpoint.")
    model_dir: Path = Field(Path("var/models"), description="Where `aprendiz build-default-model` writes the default model.")
    ready_timeout_s: float = Field(900.0, gt=0, description="How long `aprendiz serve` waits for every deployment.")
    app_name: str = Field("aprendiz", description="Name of the Serve application.")
    api_key: SecretStr | None = Field(
        None, description="An API key of the platform, for its own clients (`aprendiz evaluate` sends it)."
    )
    image_python: Path | None = Field(
        None,
        description=(
            "The Python that trains the image networks needing torchvision (MobileNetV3-Small, the vision "
            "transformer, the semi-supervised GAN): `make image-venv`'s, which the Makefile exports. Unset: "
            "this process's own Python when torchvision imports there (the training image), else those "
            "candidates are reported as unavailable."
        ),
    )

    @property
    def default_model_path(self) -> Path:
        return self.model_dir / "aprendiz-tiny-chat"
