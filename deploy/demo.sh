#!/usr/bin/env bash
# One command for a newcomer: install, migrate, load the demo corpus and users, serve on :8000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/policyhub demo --faqs deploy/demo-faqs.yaml
echo "API keys for demo-staff, demo-compliance, demo-model-risk, demo-admin: .policyhub/demo-keys.json"
exec .venv/bin/policyhub serve --host "${POLICYHUB_HOST:-127.0.0.1}" --port "${POLICYHUB_PORT:-8000}"
