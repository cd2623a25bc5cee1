#!/usr/bin/env bash
# `make demo`: build a three-node infrastructure on the local backend (no cloud account needed),
# show that it answers, print its report, and destroy it.
# Uses the configured Redis; starts a private one for the duration if none is configured.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ -z "${OCCOPUS_REDIS_URL:-}" ] && [ -z "${OCCOPUS_CONFIG_PATH:-}" ] \
        && [ ! -f "$HOME/.occopus/occopus_config.yaml" ]; then
    exec python -m occo.localredis -- "$0" "$@"
fi

if [ -t 1 ]; then  # bold headings on a terminal only: no escape codes in logs and pipes
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi
infra="$here/webapp/infra-webapp.yaml"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

step "occopus-import examples/webapp/nodes/node_definitions.yaml"
occopus-import "$here/webapp/nodes/node_definitions.yaml"

step "occopus-build --dry-run examples/webapp/infra-webapp.yaml   (check and plan)"
occopus-build --dry-run "$infra"

step "occopus-build examples/webapp/infra-webapp.yaml   (progress on stderr, report on stdout)"
occopus-build "$infra" | tee "$out"
infra_id="$(tail -n 1 "$out")"
web="$(awk '/^web:/ {getline; getline; print $1; exit}' "$out")"

step "The web node answers at http://$web:8080/ with what it fetched from the backend node:"
python -c "import urllib.request; print(urllib.request.urlopen('http://$web:8080/', timeout=10).read().decode())"

step "occopus-manage -i $infra_id -r   (live state of every instance, health checks included)"
occopus-manage -i "$infra_id" -r

step "occopus-manage -i $infra_id   (one management pass: nothing to heal)"
occopus-manage -i "$infra_id"

step "occopus-destroy -i $infra_id"
occopus-destroy -i "$infra_id"

step "Nothing is left:"
leftover="$(grep -l "OCCOPUS_INFRA_ID=$infra_id" /proc/[0-9]*/environ 2>/dev/null || true)"
if [ -n "$leftover" ]; then
    echo "demo: processes of the infrastructure are still running: $leftover" >&2
    exit 1
fi
if occopus-destroy -i "$infra_id" 2>/dev/null; then
    echo "demo: the infrastructure is still known after destroy" >&2
    exit 1
fi
if [ -d "$HOME/.occopus/local/$infra_id" ]; then
    echo "demo: the folder of the infrastructure is still there" >&2
    exit 1
fi
echo "no process, no folder and no record of $infra_id remains"
