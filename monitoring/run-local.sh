#!/usr/bin/env bash
# A local Prometheus (127.0.0.1:9090) and Pushgateway (127.0.0.1:9091) for `make run`, until Ctrl-C.
# Data is kept in var/prometheus between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMETHEUS_ADDRESS="${PROMETHEUS_ADDRESS:-127.0.0.1:9090}"
PUSHGATEWAY_ADDRESS="${PUSHGATEWAY_ADDRESS:-127.0.0.1:9091}"
mkdir -p var/prometheus

prometheus-pushgateway --web.listen-address="$PUSHGATEWAY_ADDRESS" --log.level=warn &
pushgateway=$!
trap 'kill "$pushgateway" 2>/dev/null || true; wait "$pushgateway" 2>/dev/null || true' EXIT

cat <<BANNER
aprendiz: Prometheus on http://$PROMETHEUS_ADDRESS (alerts: /alerts), Pushgateway on http://$PUSHGATEWAY_ADDRESS
  scraping  http://127.0.0.1:8080/metrics   (make run's Ray metrics endpoint)
  training  .venv/bin/aprendiz train --model breast-cancer --config config/aprendiz.yaml --pushgateway http://$PUSHGATEWAY_ADDRESS
  Grafana   add a Prometheus data source at http://$PROMETHEUS_ADDRESS and import charts/aprendiz/files/dashboards/*.json
Ctrl-C stops both.
BANNER
prometheus --config.file=monitoring/prometheus.yml --storage.tsdb.path=var/prometheus \
  --web.listen-address="$PROMETHEUS_ADDRESS" --storage.tsdb.retention.time=7d --log.level=warn
