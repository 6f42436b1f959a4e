#!/usr/bin/env bash
# Serve a target with SSD and query it with the OpenAI client.
#   bash examples/serve_and_client.sh TARGET_DIR DRAFT_DIR [PORT]
set -euo pipefail
TARGET=$1 DRAFT=$2 PORT=${3:-8000}
vllm serve "$TARGET" --host 127.0.0.1 --port "$PORT" --max-model-len 2048 \
  --speculative-config "{\"method\": \"ssd\", \"model\": \"$DRAFT\", \"num_speculative_tokens\": 4}" &
SERVER=$!
trap 'kill $SERVER' EXIT
until curl -sf "127.0.0.1:$PORT/health" >/dev/null; do sleep 1; done
python "$(dirname "$0")/openai_client.py" "http://127.0.0.1:$PORT/v1"
curl -s "127.0.0.1:$PORT/metrics" | grep -E '^vllm:ssd_cache_(lookups|hits)_total'
