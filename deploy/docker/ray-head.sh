#!/usr/bin/env bash
# Ray head of a multi-node Tessera cluster (docker-compose.yml): start Ray, deploy the Serve
# config with Ray's `serve deploy` (the same file KubeRay applies as serveConfigV2), print the
# endpoints, then stay up as long as the head is healthy. Replicas that need GPUs wait until
# a GPU worker joins.
set -euo pipefail

config="${TESSERA_SERVE_CONFIG:-/app/deploy/serve/gpu.yaml}"
metrics_port="${TESSERA_METRICS_PORT:-8080}"

ray start --head \
  --port="${RAY_PORT:-6379}" \
  --dashboard-host=0.0.0.0 \
  --metrics-export-port="$metrics_port" \
  --num-cpus="${RAY_HEAD_NUM_CPUS:-2}" \
  --num-gpus=0 \
  --disable-usage-stats

trap 'ray stop --grace-period 20; exit 0' TERM INT

serve deploy "$config" --address "http://127.0.0.1:8265"
echo "tessera: HTTP :8000  gRPC :9000  metrics http://0.0.0.0:${metrics_port}/metrics  Ray dashboard :8265"

while ray health-check >/dev/null 2>&1; do
  sleep 10 &
  wait $!
done
echo "tessera: the Ray head stopped" >&2
exit 1
