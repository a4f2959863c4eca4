#!/usr/bin/env bash
# Checks the deployment files with the real tools (README: deploy/README.md). Needs a built
# `portcullis` (target/debug), promtool and systemd-analyze; installs kubernetes-validate
# into a virtualenv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PORTCULLIS_BIN:-target/debug/portcullis}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT

echo "-- kubernetes manifests (kubernetes-validate --strict)"
if ! [ -x target/deploy-venv/bin/kubernetes-validate ]; then
  python3 -m venv target/deploy-venv
  target/deploy-venv/bin/pip install -q kubernetes-validate
fi
target/deploy-venv/bin/kubernetes-validate --strict --quiet deploy/kubernetes/portcullis.yaml

echo "-- the ConfigMap's Portcullis config (portcullis check)"
awk '/^  portcullis.yaml: \|/ {on = 1; next} on && /^---/ {exit} on && /^    / {print substr($0, 5); next} on && /^[^ ]/ {exit}' \
  deploy/kubernetes/portcullis.yaml > "$WORK/portcullis.yaml"
grep -q '^store:' "$WORK/portcullis.yaml"
PORTCULLIS_DATABASE_URL=postgres://check@127.0.0.1:5432/check "$BIN" --config "$WORK/portcullis.yaml" check

echo "-- systemd unit (systemd-analyze verify)"
sed "s#/usr/local/bin/portcullis#$PWD/$BIN#g" deploy/systemd/portcullis.service > "$WORK/portcullis.service"
out=$(systemd-analyze verify "$WORK/portcullis.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "$out"; exit 1; fi

echo "-- Prometheus scrape config and alert rules (promtool check config, check rules, test rules)"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts.test.yaml)

echo "-- Grafana dashboard (JSON; its queries and metric names: tests/operations.rs)"
python3 -m json.tool deploy/grafana/portcullis.json >/dev/null
echo "deployment files: ok"
