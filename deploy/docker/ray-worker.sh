#!/usr/bin/env bash
# A Ray worker node joining the head (docker-compose.yml's GPU worker). Ray detects the GPUs
# the container was given; Serve places GPU replicas here.
set -euo pipefail
exec ray start \
  --address="${RAY_HEAD_ADDRESS:-ray-head:6379}" \
  --metrics-export-port="${TESSERA_METRICS_PORT:-8080}" \
  --disable-usage-stats \
  --block
