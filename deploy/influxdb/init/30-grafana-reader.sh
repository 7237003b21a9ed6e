#!/bin/bash
# Runs once inside the influxdb:2 container, after 20-long-term.sh: Grafana's read-only user. A v1
# authorization (user "grafana", password GRAFANA_INFLUXDB_PASSWORD from deploy/.env) that can
# read the buckets "thermopipe" and "thermopipe_long_term" and nothing else: Grafana never holds
# the operator token (deploy/grafana/provisioning/datasources/influxdb.yaml).
set -euo pipefail

org=$DOCKER_INFLUXDB_INIT_ORG
raw=$DOCKER_INFLUXDB_INIT_BUCKET
long="${raw}_long_term"
: "${GRAFANA_INFLUXDB_PASSWORD:?GRAFANA_INFLUXDB_PASSWORD is not set (deploy/.env)}"

if influx v1 auth list --org "$org" --username grafana 2>/dev/null | grep -q grafana; then
  echo "thermopipe: the read-only user grafana exists"
  exit 0
fi
raw_id=$(influx bucket list --org "$org" --name "$raw" --hide-headers | cut -f1)
long_id=$(influx bucket list --org "$org" --name "$long" --hide-headers | cut -f1)
influx v1 auth create --org "$org" --username grafana \
  --password "$GRAFANA_INFLUXDB_PASSWORD" \
  --read-bucket "$raw_id" --read-bucket "$long_id" \
  --description "thermopipe: Grafana, read-only"
echo "thermopipe: made the read-only user grafana for $raw and $long"
