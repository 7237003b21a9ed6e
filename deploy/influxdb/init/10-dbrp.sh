#!/bin/bash
# Runs once inside the influxdb:2 container, after its first-start set-up (DOCKER_INFLUXDB_INIT_MODE
# = setup) has made the organisation, the bucket and the operator token. It maps the InfluxDB 1.x
# database name "thermopipe" (retention policy "autogen") onto that bucket, so the InfluxQL that
# Grafana's dashboards use works through the v1 compatibility API (/query?db=thermopipe).
set -euo pipefail

db=${THERMOPIPE_DB:-thermopipe}
if influx v1 dbrp list --org "$DOCKER_INFLUXDB_INIT_ORG" --db "$db" 2>/dev/null | grep -q "$db"; then
  echo "thermopipe: the DBRP mapping for database $db exists"
  exit 0
fi
influx v1 dbrp create \
  --org "$DOCKER_INFLUXDB_INIT_ORG" \
  --bucket-id "$DOCKER_INFLUXDB_INIT_BUCKET_ID" \
  --db "$db" \
  --rp autogen \
  --default
echo "thermopipe: mapped database $db/autogen to bucket $DOCKER_INFLUXDB_INIT_BUCKET"
