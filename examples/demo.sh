#!/usr/bin/env bash
# `make demo`: import the example node definitions, then check and plan an infrastructure.
# Uses the configured Redis; starts a private one for the duration if none is configured.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ -z "${OCCOPUS_REDIS_URL:-}" ] && [ -z "${OCCOPUS_CONFIG_PATH:-}" ] \
        && [ ! -f "$HOME/.occopus/occopus_config.yaml" ]; then
    exec python -m occo.localredis -- "$0" "$@"
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "occopus-import $here/ping/nodes/node_definitions.yaml"
occopus-import "$here/ping/nodes/node_definitions.yaml"

step "occopus-build --dry-run $here/ping/infra-ping-dummy.yaml"
occopus-build --dry-run "$here/ping/infra-ping-dummy.yaml"

step "occopus-build --dry-run $here/ping/infra-ping-local.yaml"
occopus-build --dry-run "$here/ping/infra-ping-local.yaml"

step "A mistake is reported in one line, with file, line, node and key:"
broken="$(mktemp -d)/infra-broken.yaml"
sed 's/type: ping_sender_node/typ: ping_sender_node/' "$here/ping/infra-ping-dummy.yaml" > "$broken"
if occopus-build --dry-run "$broken"; then
    echo "demo: the broken description was accepted" >&2
    exit 1
fi
rm -rf "$(dirname "$broken")"

step "Building arrives with the next release; the demo ends here."
