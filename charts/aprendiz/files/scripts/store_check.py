"""Store checks run by the chart's init containers (python store_check.py --help).

Waits until the platform's object store answers; optionally creates the S3 bucket of a store
URL (the in-chart MinIO starts empty) and waits until every classifier has a champion (the
Ray head waits for that before Serve deploys). Exits 1 with the reason after --timeout seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import urlsplit


def _registry(store):
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    return ModelRegistry(ObjectStore(store.url, storage_options=store.storage_options()))


def _stores(platform):
    stores = {platform.store.url: platform.store}
    for classifier in platform.classifiers:
        store = platform.store_for(classifier)
        stores[store.url] = store
    return list(stores.values())


def _check_bucket(store, create: bool) -> str:
    """Why the store's bucket is not there yet, or an empty string (made when ``create``; local stores: empty)."""
    import fsspec

    parts = urlsplit(store.url)
    if parts.scheme != "s3":
        return ""
    fs = fsspec.filesystem("s3", **store.storage_options())
    fs.invalidate_cache()
    try:
        fs.info(parts.netloc)  # a missing bucket is FileNotFoundError; an unreachable endpoint raises otherwise
        return ""
    except FileNotFoundError:
        pass
    if not create:
        return f"bucket {parts.netloc} of {store.url} does not exist"
    fs.mkdir(parts.netloc)
    print(f"store_check: created bucket {parts.netloc}", flush=True)
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="Platform config file.")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait in all.")
    parser.add_argument("--interval", type=float, default=5, help="Seconds between tries.")
    parser.add_argument("--create-bucket", action="store_true", help="Create the S3 buckets of the store URLs.")
    parser.add_argument("--wait-for-champions", action="store_true", help="Wait until every classifier has a champion.")
    args = parser.parse_args(argv)

    from aprendiz.config import ConfigError, PlatformConfig

    try:
        platform = PlatformConfig.from_yaml(args.config)
    except (ConfigError, ValueError) as exc:
        print(f"store_check: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    waiting = ""
    while True:
        try:
            reason = "; ".join(filter(None, (_check_bucket(store, args.create_bucket) for store in _stores(platform))))
            if not reason and args.wait_for_champions:
                missing = [
                    f"{c.name} (in {platform.store_for(c).url})"
                    for c in platform.classifiers
                    if _registry(platform.store_for(c)).champion(c.name) is None
                ]
                reason = f"no champion yet for {', '.join(missing)}" if missing else ""
        except Exception as exc:  # the store does not answer yet: said plainly, tried again
            reason = f"store not reachable: {type(exc).__name__}: {exc}"
        if not reason:
            print("store_check: ready", flush=True)
            return 0
        if reason != waiting:
            print(f"store_check: waiting: {reason}", flush=True)
            waiting = reason
        if time.monotonic() >= deadline:
            print(f"store_check: gave up after {args.timeout:.0f} s: {reason}", file=sys.stderr)
            return 1
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
