#!/usr/bin/env bash
# Bridge interop: mqttd bridging to Debian's mosquitto, and Debian's
# mosquitto bridging to mqttd, with the same `connection` section, checked
# with mosquitto_pub and mosquitto_sub: out and in directions with prefixes,
# QoS 1, retained messages and the connection notification. Installs
# mosquitto and mosquitto-clients when missing; prints a PASS/FAIL count
# and exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto_pub >/dev/null 2>&1 || ! [ -x /usr/sbin/mosquitto ]; then
  echo "interop_bridge: installing mosquitto and mosquitto-clients"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() { # NAME GOT WANT
  if [ "$2" == "$3" ]; then
    echo "interop_bridge: PASS: $1"
    passed=$((passed + 1))
  else
    echo "interop_bridge: FAIL: $1: got [$2], want [$3]" >&2
    failed=$((failed + 1))
  fi
}

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() {
  for _ in $(seq 100); do
    mosquitto_pub -h 127.0.0.1 -p "$1" -t interop/ping -m x 2>/dev/null && return 0
    sleep 0.1
  done
  echo "interop_bridge: nothing listens on port $1" >&2
  return 1
}

go build -o "$work/mqttd" ./cmd/mqttd

# The section both brokers run (NAME, REMOTE_PORT and NOTIFY filled in).
section() {
  cat <<EOF
connection $1
address 127.0.0.1:$2
remote_clientid $1-remote
local_clientid $1-local
bridge_protocol_version $3
restart_timeout 1
cleansession false
notification_topic bridges/$1/state
topic out/# out 1 l/ r/
topic in/# in 1 li/ ri/
topic "" out 1 cmd/local cmd/remote
EOF
}

# scenario LABEL EDGE_PORT REMOTE_PORT NAME: the edge broker bridges to the remote.
scenario() {
  local label=$1 ep=$2 rp=$3 name=$4
  # The bridge is up once its notification says 1 (retained) on both sides.
  got=$(mosquitto_sub -h 127.0.0.1 -p "$rp" -t "bridges/$name/state" -C 1 -W 15 2>/dev/null || true)
  for _ in $(seq 50); do
    [ "$got" == "1" ] && break
    sleep 0.2
    got=$(mosquitto_sub -h 127.0.0.1 -p "$rp" -t "bridges/$name/state" -C 1 -W 2 2>/dev/null || true)
  done
  check "$label: notification 1 on the remote" "$got" "1"

  # Out, QoS 1, with prefixes.
  mosquitto_sub -h 127.0.0.1 -p "$rp" -t 'r/out/#' -q 1 -C 1 -W 10 -F '%t|%p|%q' >"$work/out.txt" 2>/dev/null &
  local sp=$!
  sleep 0.5
  mosquitto_pub -h 127.0.0.1 -p "$ep" -t l/out/a -m hello -q 1
  wait "$sp" || true
  check "$label: out l/out/a -> r/out/a QoS 1" "$(cat "$work/out.txt")" "r/out/a|hello|1"

  # In, QoS 1, with prefixes.
  mosquitto_sub -h 127.0.0.1 -p "$ep" -t 'li/in/#' -q 1 -C 1 -W 10 -F '%t|%p|%q' >"$work/in.txt" 2>/dev/null &
  sp=$!
  sleep 0.5
  mosquitto_pub -h 127.0.0.1 -p "$rp" -t ri/in/b -m world -q 1
  wait "$sp" || true
  check "$label: in ri/in/b -> li/in/b QoS 1" "$(cat "$work/in.txt")" "li/in/b|world|1"

  # A "" pattern maps one topic exactly.
  mosquitto_sub -h 127.0.0.1 -p "$rp" -t 'cmd/#' -C 1 -W 10 -F '%t|%p' >"$work/cmd.txt" 2>/dev/null &
  sp=$!
  sleep 0.5
  mosquitto_pub -h 127.0.0.1 -p "$ep" -t cmd/local -m go -q 1
  wait "$sp" || true
  check "$label: cmd/local -> cmd/remote" "$(cat "$work/cmd.txt")" "cmd/remote|go"

  # Retained: kept on the remote.
  mosquitto_pub -h 127.0.0.1 -p "$ep" -t l/out/ret -m kept -q 1 -r
  got=""
  for _ in $(seq 50); do
    got=$(mosquitto_sub -h 127.0.0.1 -p "$rp" -t r/out/ret -C 1 -W 1 -F '%t|%p|%r' 2>/dev/null || true)
    [ -n "$got" ] && break
  done
  check "$label: retained l/out/ret kept on the remote" "$got" "r/out/ret|kept|1"

  # Nothing outside the topic lines crosses.
  mosquitto_sub -h 127.0.0.1 -p "$rp" -t 'out/#' -t 'l/#' -C 1 -W 2 >"$work/none.txt" 2>/dev/null &
  sp=$!
  sleep 0.5
  mosquitto_pub -h 127.0.0.1 -p "$ep" -t out/x -m no -q 1
  wait "$sp" || true
  check "$label: unbridged topics stay local" "$(cat "$work/none.txt")" ""
}

for v in mqttv311 mqttv50; do
  # 1. mqttd bridges to mosquitto.
  mp=$(freeport); qp=$(freeport)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mp" >"$work/remote-$v.conf"
  /usr/sbin/mosquitto -c "$work/remote-$v.conf" >"$work/mosquitto-remote-$v.log" 2>&1 &
  pids+=($!)
  mkdir -p "$work/mqttd-$v"
  { printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$qp"; section "edge$v" "$mp" "$v"; } \
    >"$work/mqttd-$v/mqttd.conf"
  (cd "$work/mqttd-$v" && exec "$work/mqttd" -c mqttd.conf -v >mqttd.log 2>&1) &
  pids+=($!)
  waitport "$mp"
  waitport "$qp"
  scenario "mqttd -> mosquitto ($v)" "$qp" "$mp" "edge$v"

  # 2. mosquitto bridges to mqttd.
  mp=$(freeport); qp=$(freeport)
  mkdir -p "$work/mqttd-remote-$v"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$qp" >"$work/mqttd-remote-$v/mqttd.conf"
  (cd "$work/mqttd-remote-$v" && exec "$work/mqttd" -c mqttd.conf -v >mqttd.log 2>&1) &
  pids+=($!)
  { printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mp"; section "mosq$v" "$qp" "$v"; } >"$work/edge-$v.conf"
  /usr/sbin/mosquitto -c "$work/edge-$v.conf" >"$work/mosquitto-edge-$v.log" 2>&1 &
  pids+=($!)
  waitport "$qp"
  waitport "$mp"
  scenario "mosquitto -> mqttd ($v)" "$mp" "$qp" "mosq$v"
done

echo "interop_bridge: $passed PASS, $failed FAIL"
if [ "$failed" -gt 0 ]; then
  for f in "$work"/*.log "$work"/*/mqttd.log; do echo "== $f"; tail -n 20 "$f"; done >&2
  exit 1
fi
