#!/usr/bin/env bash
# Installs Debian's prometheus (it brings promtool) and prometheus-pushgateway for the rule tests and
# the observability proof, when promtool or the Pushgateway is missing. Their services are not started:
# a policy-rc.d that refuses every start is in place for the install (one already there is kept).
set -euo pipefail

if command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v prometheus-pushgateway >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
POLICY=/usr/sbin/policy-rc.d
placed=""
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# aprendiz: no service starts while prometheus is installed\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  placed=yes
fi
cleanup() { if [ -n "$placed" ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

echo "aprendiz: installing Debian's prometheus and prometheus-pushgateway (promtool, for the alert rule tests)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >/dev/null
promtool --version | head -1
