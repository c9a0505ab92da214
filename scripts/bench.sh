#!/usr/bin/env bash
# bench.sh: mqttd and Mosquitto side by side on this machine, measured in the
# same run with `mqtt bench` (and mosquitto_sub for the retained row). Not
# part of CI.
#
#   bash scripts/bench.sh [ROW ...]
#
# Rows (default: all of them, in this order):
#   fanin     50 publishers -> 1 wildcard subscriber, QoS 0, 1, 2
#   fanout    1 publisher -> 100 subscribers, QoS 0, 1, 2
#   pairs     200 publisher/subscriber pairs, QoS 0, 1, 2
#   latency   1 pair at 5,000 msg/s, QoS 0: p50 and p99
#   connect   CONNECT to CONNACK for 19,500 clients
#   memory    RSS per idle subscribed connection (scripts/sizing.sh, 10,000)
#   retained  100,000 retained messages to one `#` subscriber (mosquitto_sub)
#   persist   QoS 1 fan-in to persistent sessions: mqttd persistence_sync
#             always against Mosquitto persistence true; and the latency
#             of one QoS 1 persistent pair at 2,000 msg/s, p50 and p99
#
# Each broker runs pinned to core 0 (taskset) and the load to core 1, with
# default settings plus `persistence false` (except the persist row) and
# unlimited queues (max_queued_messages 0) for both; 64-byte payloads. Every
# row runs RUNS times (default 3), alternating which broker goes first, and
# the table gives medians and the ratio, where > 1 means mqttd is better
# (more messages, less time, fewer bytes). Loss is summed over the runs.
# DUR (default 5) is the seconds of publishing per throughput run; QOS
# (default "0 1 2") the QoS levels of the fanin, fanout and pairs rows.
# BROKER_CPUS and LOAD_CPUS (taskset lists, default 0 and 1) change the
# pinning: BROKER_CPUS=0,1 LOAD_CPUS=0,1 gives both brokers every core (for
# the 2-core ratio; Mosquitto uses one whatever it is given).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DUR=${DUR:-5}
rows=("$@")
[ ${#rows[@]} -eq 0 ] && rows=(fanin fanout pairs latency connect memory retained persist)

command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
  echo "bench: needs mosquitto (apt-get install -y mosquitto mosquitto-clients)" >&2; exit 1; }
command -v mosquitto_sub >/dev/null || { echo "bench: needs mosquitto_sub (apt-get install -y mosquitto-clients)" >&2; exit 1; }
PATH=$PATH:/usr/sbin
if [ "$(nproc)" -ge 2 ]; then
  pin_broker=(taskset -c "${BROKER_CPUS:-0}") pin_load=(taskset -c "${LOAD_CPUS:-1}")
else
  pin_broker=() pin_load=()
  echo "bench: one core: nothing pinned, the figures mix broker and load" >&2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/mqttd" ./cmd/mqttd
go build -o "$work/mqtt" ./cmd/mqtt
results=$work/results.tsv
: >"$results"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start BROKER [persist]: runs mqttd or mosquitto pinned; sets $P and $pid.
start() {
  local broker=$1 mode=${2:-}
  P=$(port)
  {
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_connections -1\nsys_interval 0\n' "$P"
    if [ "$mode" = persist ]; then
      printf 'persistence true\npersistence_location %s/data-%s/\n' "$work" "$broker"
      [ "$broker" = mqttd ] && printf 'persistence_sync always\n'
    else
      printf 'persistence false\n'
    fi
  } >"$work/$broker.conf"
  rm -rf "$work/data-$broker"
  if [ "$broker" = mosquitto ]; then
    "${pin_broker[@]}" mosquitto -c "$work/$broker.conf" >"$work/$broker.log" 2>&1 &
  else
    "${pin_broker[@]}" "$work/mqttd" -c "$work/$broker.conf" >"$work/$broker.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1',$P),1).close()" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "bench: $broker did not start" >&2; cat "$work/$broker.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# record ROW BROKER METRIC VALUE LOST
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }

# bench ROW BROKER METRICS ARGS...: one `mqtt bench` run on core 1; METRICS
# (comma separated) are taken from its JSON: rate, p50, p99, connect.
bench() {
  local row=$1 broker=$2 metrics=$3; shift 3
  local js
  # mqtt bench exits 3 when QoS 1/2 messages were lost: that is a result.
  js=$("${pin_load[@]}" "$work/mqtt" bench "$@" -p "$P" --json 2>"$work/bench.err" | tail -n 1 || true)
  if [ -z "$js" ]; then echo "bench: $row $broker: no result" >&2; cat "$work/bench.err" >&2; record "$row" "$broker" rate 0 -1; return; fi
  python3 - "$row" "$broker" "$metrics" "$js" >>"$results" <<'EOF'
import json, sys
row, broker, metrics, d = sys.argv[1], sys.argv[2], sys.argv[3].split(","), json.loads(sys.argv[4])
lat = d.get("latency_us") or {}
val = {"rate": d.get("recv_msgs_per_s", 0), "p50": lat.get("p50", 0) / 1000, "p99": lat.get("p99", 0) / 1000,
       "connect": d.get("connects_per_s", 0)}
lost = d.get("lost", 0) + d.get("connect_errors", 0)
for m in metrics:
    print("%s\t%s\t%s\t%.4f\t%d" % (row, broker, m, val[m], lost))
EOF
  tail -n 1 "$results" | awk -F'\t' '{ printf "  %-14s %-9s %-8s %12.2f  lost %s\n", $1, $2, $3, $4, $5 }' >&2
}

# order N: the two brokers, alternating which goes first.
order() { if [ $(($1 % 2)) -eq 0 ]; then echo "mqttd mosquitto"; else echo "mosquitto mqttd"; fi; }

retained_pub() { # publishes N retained QoS 0 messages under r/, then waits for a PINGRESP
  python3 - "$P" "$1" <<'EOF'
import socket, struct, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
def rl(x):
    out = b""
    while True:
        b = x % 128; x //= 128
        out += bytes([b | (0x80 if x else 0)])
        if not x: return out
def s16(t): b = t.encode(); return struct.pack(">H", len(b)) + b
s = socket.create_connection(("127.0.0.1", port))
body = s16("MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + s16("bench-retained")
s.sendall(b"\x10" + rl(len(body)) + body); s.recv(4)
payload = b"x" * 64
for i in range(0, n, 1000):
    out = []
    for j in range(i, min(i + 1000, n)):
        body = s16("r/%d/%d" % (j // 1000, j)) + payload
        out.append(b"\x31" + rl(len(body)) + body)
    s.sendall(b"".join(out))
s.sendall(b"\xc0\x00")
buf = b""
while not buf.endswith(b"\xd0\x00"):
    c = s.recv(65536)
    if not c: raise SystemExit("connection closed")
    buf += c
s.sendall(b"\xe0\x00"); s.close()
EOF
}

for row in "${rows[@]}"; do
  echo "== $row" >&2
  for run in $(seq "$RUNS"); do
    for broker in $(order "$run"); do
      case $row in
      fanin | fanout | pairs)
        n=50; [ "$row" = fanout ] && n=100; [ "$row" = pairs ] && n=200
        for q in ${QOS:-0 1 2}; do
          # Mosquitto closes a 3.1.1 publisher with more than
          # max_inflight_messages (20) QoS 2 messages in flight towards it:
          # QoS 2 publishers keep to 20 (QoS 0 and 1: mqtt bench's 64).
          w=64; [ "$q" = 2 ] && w=20
          start "$broker"
          bench "$row-qos$q" "$broker" rate "$row" --clients "$n" --qos "$q" --window "$w" --duration "$DUR" --drain 5
          stop
        done
        ;;
      latency)
        start "$broker"
        bench latency "$broker" p50,p99 latency --clients 1 --rate 5000 --qos 0 --duration "$((DUR * 2))" --drain 2
        stop
        ;;
      connect)
        start "$broker"
        bench connect "$broker" connect conns --clients 19500 --concurrency 100 --duration 1s
        stop
        ;;
      memory)
        if [ "$broker" = mqttd ]; then # sizing.sh measures both brokers in one go
          out=$(MOSQUITTO=1 PERSISTENCE=false bash scripts/sizing.sh 10000 0 0 0 2>&1) || { echo "$out" >&2; exit 1; }
          echo "$out" | grep -E 'idle subscribed \(3.1.1\)' >&2 || true
          python3 - "$out" >>"$results" <<'EOF'
import re, sys
for line in sys.argv[1].splitlines():
    m = re.match(r"\s*idle subscribed \(3\.1\.1\): mqttd (\d+) B, mosquitto (\d+) B", line)
    if m:
        print("memory\tmqttd\tbytes\t%s\t0" % m.group(1))
        print("memory\tmosquitto\tbytes\t%s\t0" % m.group(2))
EOF
        fi
        ;;
      retained)
        start "$broker"
        retained_pub 100000
        t0=$(date +%s.%N)
        got=$("${pin_load[@]}" mosquitto_sub -p "$P" -t '#' -C 100000 -W 60 | wc -l)
        t1=$(date +%s.%N)
        s=$(python3 -c "print('%.4f' % ($t1 - $t0))")
        record retained "$broker" seconds "$s" $((100000 - got))
        echo "  retained       $broker $s s ($got received)" >&2
        stop
        ;;
      persist)
        start "$broker" persist
        bench persist-qos1 "$broker" rate fanin --clients 50 --qos 1 -c --duration "$DUR" --drain 5
        stop
        start "$broker" persist
        bench persist-latency "$broker" p50,p99 latency --clients 1 --rate 2000 --qos 1 -c --duration "$DUR" --drain 2
        stop
        ;;
      *) echo "bench: unknown row $row" >&2; exit 2 ;;
      esac
    done
  done
done

echo
echo "mqttd vs Mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | awk '{print $3}'): $(uname -srm), $(nproc) cores, $(go version | cut -d' ' -f3), RUNS=$RUNS, DUR=${DUR}s, broker on cores ${BROKER_CPUS:-0}, load on cores ${LOAD_CPUS:-1}"
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, broker, metric, val, lost = line.rstrip("\n").split("\t")
    r = rows.setdefault((row, metric), {"mqttd": [], "mosquitto": [], "lost": {"mqttd": 0, "mosquitto": 0}})
    r[broker].append(float(val))
    r["lost"][broker] += int(lost)
lower_better = {"p50", "p99", "seconds", "bytes"}
unit = {"rate": "msg/s", "connect": "conn/s", "p50": "ms", "p99": "ms", "seconds": "s", "bytes": "B"}
print("| row | metric | Mosquitto | mqttd | ratio (> 1: mqttd better) | lost Mosquitto / mqttd |")
print("|---|---|---|---|---|---|")
for (row, metric), r in rows.items():
    if not r["mqttd"] or not r["mosquitto"]:
        continue
    a, b = statistics.median(r["mqttd"]), statistics.median(r["mosquitto"])
    ratio = (b / a if a else float("inf")) if metric in lower_better else (a / b if b else float("inf"))
    fmt = "%.0f" if metric in ("rate", "connect", "bytes") else "%.3f"
    print("| %s | %s (%s) | %s | %s | %.2f | %d / %d |" % (row, metric, unit[metric], fmt % b, fmt % a, ratio,
          r["lost"]["mosquitto"], r["lost"]["mqttd"]))
EOF
