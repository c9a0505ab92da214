#!/usr/bin/env bash
# Soak test: runs mqttd (persistence on, metrics endpoint) on 127.0.0.1 and
# puts a mixed load on it for DURATION seconds with internal/soak, which
# samples the broker's RSS, threads, descriptors, goroutines and store size,
# prints a table and exits non-zero on growth after the warm-up.
#   bash scripts/soak.sh [DURATION_SECONDS]   (default 60)
# SOAK_LOG_TYPES (default "error warning") sets the broker's log_type lines.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
duration="${1:-60}"

work=$(mktemp -d /tmp/mqttd-soak.XXXXXX)
chmod 755 "$work" # run as root, mqttd drops to the mosquitto user
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/mqttd" ./cmd/mqttd
go build -o "$work/soak" ./internal/soak

read -r port mport < <(python3 -c '
import socket
s=[socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1",0))
print(*[x.getsockname()[1] for x in s])')
mkdir -m 755 "$work/data"
cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
metrics_listener $mport 127.0.0.1
persistence true
persistence_location $work/data
log_dest stderr
$(for t in ${SOAK_LOG_TYPES:-error warning}; do echo "log_type $t"; done)
CONF
# stderr, not log_dest file: mqttd drops to the mosquitto user, which may
# not be able to open a file in the work directory.
"$work/mqttd" -c "$work/mosquitto.conf" 2>"$work/mqttd.log" &
pid=$!
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$pid" || { echo "soak: mqttd exited"; cat "$work/mqttd.log" 2>/dev/null; exit 1; }
  sleep 0.1
done

echo "soak: mqttd pid $pid on 127.0.0.1:$port for ${duration}s"
status=0
"$work/soak" -addr "127.0.0.1:$port" -pid "$pid" -metrics "http://127.0.0.1:$mport/metrics" \
  -store "$work/data" -duration "${duration}s" || status=$?

kill -TERM "$pid"
for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then echo "soak: mqttd did not stop on SIGTERM"; status=1; fi
wait "$pid" || { echo "soak: mqttd exited with status $?"; status=1; }
pid=""
if [ -s "$work/mqttd.log" ]; then
  # Errors and warnings (log_type error, warning), counted without their
  # timestamps and client addresses.
  echo "soak: the broker logged:"
  sed -E 's/^[0-9]+: //; s/(remote|client)=[^ ]+ //g' "$work/mqttd.log" | sort | uniq -c | sort -rn | head -20
  if grep -qE 'connection refused|store|batch' "$work/mqttd.log"; then
    echo "soak: refusals and store messages (first 20):"
    grep -E 'connection refused|store|batch' "$work/mqttd.log" | head -20
  fi
fi
exit $status
