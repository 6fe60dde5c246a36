#!/usr/bin/env bash
# Securing Quiver end to end (README "Securing Quiver"): the example repository served with
# TLS, two bearer tokens and two permissions; then reads and a push as each caller.
#   examples/secure.sh DIR
set -euo pipefail
dir=${1:?usage: secure.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
bin="${QUIVER_BIN:-${CARGO_TARGET_DIR:-$here/../target}/debug/quiver}"
q() { "$bin" --repo "$dir" "$@"; }

rm -rf "$dir"
q init "$dir" >/dev/null
cd "$dir"

# A throwaway CA and a certificate for 127.0.0.1.
mkdir -p secrets
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=quiver-ca \
  -keyout secrets/ca.key -out secrets/ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
  -keyout secrets/server.key -out secrets/server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > secrets/san.ext
openssl x509 -req -in secrets/server.csr -CA secrets/ca.crt -CAkey secrets/ca.key \
  -CAcreateserial -days 2 -extfile secrets/san.ext -out secrets/server.crt 2>/dev/null

# Two tokens: a reader and an admin. The tokens file keeps only their hashes.
reader=$(q --json token create --principal analyst --roles reader --expires-in 1d)
admin=$(q --json token create --principal platform --roles admin --expires-in 1d)
token() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" token; }
python3 - "$reader" "$admin" > secrets/tokens.json <<'PY'
import json, sys
print(json.dumps({"tokens": [json.loads(a)["entry"] for a in sys.argv[1:]]}))
PY

cat >> quiver.yaml <<'YAML'
server:
  tls: {cert_file: secrets/server.crt, key_file: secrets/server.key}
  auth: {type: token, tokens_file: secrets/tokens.json}
YAML
cat > permissions.yaml <<'YAML'
permissions:
  - name: readers
    types: [feature_view, feature_service]
    actions: [read, describe]
    policy: {roles: [reader]}
  - name: admins
    actions: [all]
    policy: {roles: [admin]}
YAML
q apply --author secure-example >/dev/null
q materialize-incremental now >/dev/null

log=$(mktemp)
"$bin" --repo "$dir" serve --grpc-port 0 --http-port 0 --flight-port 0 > "$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q '^Arrow Flight' "$log" && break; sleep 0.1; done
http=$(sed -n 's/^HTTP: //p' "$log")

call() {  # call WHO PATH BODY: prints the HTTP status
  local auth=()
  [ -n "$1" ] && auth=(-H "Authorization: Bearer $1")
  curl -sS -o /dev/null -w '%{http_code}' --cacert secrets/ca.crt "${auth[@]}" \
    -H 'Content-Type: application/json' -d "$3" "$http$2"
}
read='{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}'
push='{"push_source_name": "driver_hourly_stats", "df": {"driver_id": [1001], "event_timestamp": ["'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'"], "conv_rate": [0.5]}}'
printf 'read,  no token:   %s (401: unauthenticated)\n' "$(call '' /get-online-features "$read")"
printf 'read,  analyst:    %s (200: readers grants read_online)\n' "$(call "$(token "$reader")" /get-online-features "$read")"
printf 'push,  analyst:    %s (403: nothing grants write_online)\n' "$(call "$(token "$reader")" /push "$push")"
printf 'push,  platform:   %s (200: admins grants all)\n' "$(call "$(token "$admin")" /push "$push")"
q permissions check --principal analyst --roles reader --action write_online \
  --object feature_view:driver_hourly_stats || true
echo "audit log: $(wc -l < audit.log) records in $dir/audit.log"
