#!/usr/bin/env bash
# Side-by-side throughput of mqttd and Mosquitto on this machine, measured
# with `mqtt bench` in the same run. Not part of CI.
#
#   bash scripts/bench.sh [duration-seconds] [all|throughput|persist]
#
# Prints one line per scenario and broker (delivered msgs/s, loss, latency)
# and the mqttd/Mosquitto ratio of delivered msgs/s. Scenarios: fanin, fanout
# and pairs at QoS 0 and 1 (8 clients, 64-byte payloads, unlimited rate), and
# persistent QoS 1 fan-in (all sessions persistent) with mqttd's
# persistence_sync always and never against Mosquitto with persistence true.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-5}
section=${2:-all}
command -v mosquitto >/dev/null || { echo "bench: needs mosquitto (apt-get install -y mosquitto)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/mqttd" ./cmd/mqttd
go build -o "$work/mqtt" ./cmd/mqtt
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name conf -> sets $P
  local name=$1 conf=$2
  P=$(port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n%s\n' "$P" "$conf" >"$work/$name.conf"
  if [ "${name%%-*}" = mosquitto ]; then
    mosquitto -c "$work/$name.conf" >"$work/$name.log" 2>&1 &
  else
    "$work/mqttd" -c "$work/$name.conf" >"$work/$name.log" 2>&1 &
  fi
  pids+=($!)
  for _ in $(seq 100); do "$work/mqtt" pub -p "$P" -t x -m x 2>/dev/null && return; sleep 0.05; done
  echo "bench: $name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}
stop() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

run() { # name args... -> prints a line to stderr, sets $RATE (delivered msgs/s)
  local name=$1; shift
  local js
  # mqtt bench exits 3 when QoS 1/2 messages were lost: that is a result here.
  js=$("$work/mqtt" bench "$@" -p "$P" --duration "$dur" --drain 5 --json 2>/dev/null | tail -n 1 || true)
  RATE=$(printf '%s' "$js" | /usr/bin/python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
lat = d.get("latency_us", {})
sys.stderr.write("  %-30s delivered %9.0f msg/s  published %9.0f msg/s  lost %8d  dup %d  p50 %8.2f ms  p99 %8.2f ms\n" % (
    sys.argv[1], d["recv_msgs_per_s"], d["send_msgs_per_s"], d["lost"], d["duplicates"],
    lat.get("p50", 0) / 1000, lat.get("p99", 0) / 1000))
print("%.0f" % d["recv_msgs_per_s"])' "$name")
}
ratio() { /usr/bin/python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / max(float(sys.argv[2]), 1)))" "$1" "$2"; }

if [ "$section" != persist ]; then
echo "== throughput, 8 clients, 64 B, ${dur}s (memory only)"
for sc in fanin fanout pairs; do
  for q in 0 1; do
    start mqttd "persistence false"; run "mqttd $sc qos$q" "$sc" --clients 8 --qos "$q"; a=$RATE; stop
    start mosquitto "persistence false"; run "mosquitto $sc qos$q" "$sc" --clients 8 --qos "$q"; b=$RATE; stop
    echo "  ratio $sc qos$q delivered: mqttd/mosquitto = $(ratio "$a" "$b")"
  done
done

fi
[ "$section" = throughput ] && exit 0

echo "== persistent QoS 1 fan-in (persistent sessions), 4 publishers"
start mqttd-always "persistence true
persistence_location $work/always/
persistence_sync always"; run "mqttd sync always" fanin --clients 4 --qos 1 -c; a=$RATE; stop
start mqttd-never "persistence true
persistence_location $work/never/
persistence_sync never"; run "mqttd sync never" fanin --clients 4 --qos 1 -c; n=$RATE; stop
start mosquitto-p "persistence true
persistence_location $work/mosq/"; run "mosquitto persistence true" fanin --clients 4 --qos 1 -c; b=$RATE; stop
echo "  ratio delivered: always/mosquitto = $(ratio "$a" "$b"), never/mosquitto = $(ratio "$n" "$b")"
