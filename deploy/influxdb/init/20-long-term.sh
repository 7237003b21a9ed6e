#!/bin/bash
# Runs once inside the influxdb:2 container, after 10-dbrp.sh. The bucket "thermopipe" keeps raw
# events for DOCKER_INFLUXDB_INIT_RETENTION (90 days in compose.yaml); this script makes
#   - the bucket "thermopipe_long_term" (THERMOPIPE_LONG_TERM_RETENTION, 5 years in compose),
#   - its InfluxQL mapping: database "thermopipe", retention policy "long_term", so Grafana's
#     InfluxQL reads it as "long_term"."temperature_15m" (the same name as on InfluxDB 1.x, where
#     deploy/influxdb/v1/setup.iql makes the retention policy and a continuous query),
#   - a task that every 15 minutes writes min/mean/max and the count of good readings per
#     sensor and 15-minute window from the sensor_summary points into "temperature_15m"
#     (re-computing the last hour, so late points are counted; the same as the continuous query).
set -euo pipefail

db=${THERMOPIPE_DB:-thermopipe}
org=$DOCKER_INFLUXDB_INIT_ORG
raw=$DOCKER_INFLUXDB_INIT_BUCKET
long="${raw}_long_term"

if ! influx bucket list --org "$org" --name "$long" >/dev/null 2>&1; then
  influx bucket create --org "$org" --name "$long" \
    --retention "${THERMOPIPE_LONG_TERM_RETENTION:-1825d}" \
    --description "thermopipe: 15-minute min/mean/max per sensor"
fi
long_id=$(influx bucket list --org "$org" --name "$long" --hide-headers | cut -f1)

if ! influx v1 dbrp list --org "$org" --db "$db" 2>/dev/null | grep -q long_term; then
  influx v1 dbrp create --org "$org" --bucket-id "$long_id" --db "$db" --rp long_term
fi

if ! influx task list --org "$org" 2>/dev/null | grep -q "thermopipe downsample 15m"; then
  influx task create --org "$org" --file /dev/stdin <<FLUX
option task = {name: "thermopipe downsample 15m", every: 15m, offset: 1m}

summaries = from(bucket: "$raw")
  |> range(start: -1h)
  |> filter(fn: (r) => r._measurement == "sensor_summary")

agg = (field, fn) => summaries
  |> filter(fn: (r) => r._field == field)
  |> aggregateWindow(every: 15m, fn: fn, createEmpty: false, timeSrc: "_start")
  |> set(key: "_measurement", value: "temperature_15m")

union(tables: [agg(field: "min", fn: min), agg(field: "mean", fn: mean),
               agg(field: "max", fn: max), agg(field: "count", fn: sum)])
  |> to(bucket: "$long", org: "$org")
FLUX
fi
echo "thermopipe: long-term bucket $long (mapped as $db/long_term) and its downsampling task"
