#!/usr/bin/env bash
# sizing.sh: measures mqttd's resident memory (VmRSS) per idle connection,
# per idle subscribed connection, per offline persistent session, per queued
# QoS 1 message and per retained message, for docs/operations.md.
#
#   bash scripts/sizing.sh [CONNS] [SESSIONS] [QUEUED] [RETAINED] [PAYLOAD]
#
# Defaults: 10000 connections, 10000 sessions, 50000 queued messages, 50000
# retained messages, 100-byte payloads; a count of 0 skips its rows. Each
# figure is (RSS after - RSS before) / count against a fresh broker
# (persistence on, the default store, persistence_sync always), measured once
# the RSS has settled (five seconds within 1%). Idle connections are opened by `mqtt bench conns
# --pid`; idle subscribed ones (clean, keep alive 60, one QoS 1 filter each,
# MQTT 3.1.1 and 5.0) and the rest by a small MQTT client written in Python
# below (no library needed).
#
# PERSISTENCE=false measures without the store. MOSQUITTO=1 also measures
# the idle subscribed connections against Mosquitto (persistence false, the
# same limits) in the same run and prints the ratio. With two cores or more
# the broker is pinned to core 0 and the clients to core 1 (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${1:-10000}
SESSIONS=${2:-10000}
QUEUED=${3:-50000}
RETAINED=${4:-50000}
PAYLOAD=${5:-100}
PERSISTENCE=${PERSISTENCE:-true}
MOSQUITTO=${MOSQUITTO:-0}

pin_broker=() pin_client=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_broker=(taskset -c 0) pin_client=(taskset -c 1)
fi
if [ "$MOSQUITTO" = 1 ] && ! command -v mosquitto >/dev/null; then
  echo "sizing: MOSQUITTO=1 needs mosquitto (apt-get install -y mosquitto)" >&2; exit 1
fi

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

go build -o "$work/mqttd" ./cmd/mqttd
go build -o "$work/mqtt" ./cmd/mqtt

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

wait_port() { # name
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1).close()" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "$1 did not start"; cat "$work/$1.log"; exit 1
}
start() {
  cat >"$work/mqttd.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence $PERSISTENCE
persistence_location $work/data
max_queued_messages 0
max_connections -1
sys_interval 0
log_dest file $work/mqttd.log
EOF
  "${pin_broker[@]}" "$work/mqttd" -c "$work/mqttd.conf" &
  pid=$!
  wait_port mqttd
}
start_mosquitto() {
  cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_connections -1
sys_interval 0
log_dest stderr
EOF
  # stderr: run as root, Mosquitto drops to its own user, which cannot write in $work
  "${pin_broker[@]}" mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
  pid=$!
  wait_port mosquitto
}
stop() { kill "$pid"; wait "$pid" || true; pid=; rm -rf "$work/data"; }

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
# settled: the RSS once six readings a second apart (five seconds) stay
# within 1% of the first of them; a broker that is still returning memory
# (mqttd gives the heap's free pages back a few seconds after a wave of
# connections, internal/memtrim) is measured once it is done.
settled() {
  local a b n=0
  a=$(rss)
  for _ in $(seq 60); do
    sleep 1
    b=$(rss)
    if [ $(( (a > b ? a - b : b - a) * 100 )) -le "$a" ]; then
      n=$((n + 1))
      if [ "$n" -ge 5 ]; then break; fi
    else
      a=$b n=0
    fi
  done
  echo "$b"
}
report() { # name count before_kb after_kb
  awk -v n="$1" -v c="$2" -v a="$3" -v b="$4" \
    'BEGIN { printf "%-36s %8d  RSS %7d kB -> %7d kB  %6.0f bytes each\n", n, c, a, b, (b - a) * 1024 / c }'
}

client="$work/client.py"
cat >"$client" <<'EOF'
# A minimal MQTT client for sizing.sh: idle-sub | idle-sub5 | sessions | queued | retained.
import socket, struct, sys

def rl(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out

def s16(s):
    b = s.encode(); return struct.pack(">H", len(b)) + b

def recvn(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk: raise SystemExit("connection closed")
        buf += chunk
    return buf

def recvpkt(s):
    # fixed header, remaining length (varint), body
    first = recvn(s, 1)
    n, mul = 0, 1
    while True:
        b = recvn(s, 1)[0]
        n += (b & 0x7f) * mul; mul *= 128
        if b < 0x80: break
    return first[0], recvn(s, n)

def connect(port, cid, clean, v5=False):
    s = socket.create_connection(("127.0.0.1", port))
    props = b"\x00" if v5 else b""
    body = s16("MQTT") + bytes([5 if v5 else 4, 0x02 if clean else 0x00]) + struct.pack(">H", 60) + props + s16(cid)
    s.sendall(b"\x10" + rl(len(body)) + body)
    t, ack = recvpkt(s)
    if t != 0x20 or ack[1] != 0: raise SystemExit("CONNACK %r" % ack)
    return s

def subscribe(s, flt, qos, v5=False):
    props = b"\x00" if v5 else b""
    body = struct.pack(">H", 1) + props + s16(flt) + bytes([qos])
    s.sendall(b"\x82" + rl(len(body)) + body)
    t, ack = recvpkt(s)
    if t != 0x90 or ack[-1] >= 0x80: raise SystemExit("SUBACK %r" % ack)

def disconnect(s):
    s.sendall(b"\xe0\x00"); s.close()

def publish_many(s, topics, payload, retain):
    # QoS 1 in windows of 500, waiting for the PUBACKs of each window.
    pid = 0
    for i in range(0, len(topics), 500):
        out = []
        for t in topics[i:i + 500]:
            pid = pid % 65535 + 1
            body = s16(t) + struct.pack(">H", pid) + payload
            out.append(bytes([0x32 | (1 if retain else 0)]) + rl(len(body)) + body)
        s.sendall(b"".join(out))
        recvn(s, 4 * len(out))

port, what, n, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
payload = b"x" * size
if what in ("idle-sub", "idle-sub5"):
    # n clean connections, each subscribed to a filter of its own, held open
    # until standard input closes (well within the 60 s keep alive).
    v5 = what == "idle-sub5"
    held = []
    for i in range(n):
        s = connect(port, "sizing-idle-%06d" % i, True, v5)
        subscribe(s, "sizing/idle/%06d/cmd" % i, 1, v5)
        held.append(s)
    print("ready", flush=True)
    sys.stdin.read()
    for s in held: s.close()
elif what == "sessions":
    for i in range(n):
        s = connect(port, "sizing-offline-%06d" % i, False)
        subscribe(s, "sizing/offline/%06d" % i, 1)
        disconnect(s)
elif what == "queued-sub":
    s = connect(port, "sizing-queue", False); subscribe(s, "sizing/queue", 1); disconnect(s)
elif what == "queued":
    s = connect(port, "sizing-pub", True); publish_many(s, ["sizing/queue"] * n, payload, False); disconnect(s)
elif what == "retained":
    s = connect(port, "sizing-pub", True)
    publish_many(s, ["sizing/retained/%06d" % i for i in range(n)], payload, True); disconnect(s)
EOF

# idle_sub MODE NAME: opens CONNS idle subscribed connections to the running
# broker, holds them while the RSS settles, reports, and sets $per (bytes).
idle_sub() {
  local before after ready
  before=$(settled)
  coproc HOLD { "${pin_client[@]}" python3 "$client" "$port" "$1" "$CONNS" 0; }
  if ! read -r ready <&"${HOLD[0]}"; then echo "sizing: the idle clients failed" >&2; exit 1; fi
  after=$(settled)
  per=$(( (after - before) * 1024 / CONNS ))
  report "$2" "$CONNS" "$before" "$after"
  exec {HOLD[1]}>&-
  wait "$HOLD_PID" || true
}

echo "mqttd sizing: $(uname -srm), $(nproc) cores, $(go version | cut -d' ' -f3), persistence $PERSISTENCE, payload $PAYLOAD B"

if [ "$CONNS" -gt 0 ]; then
  start
  "${pin_client[@]}" "$work/mqtt" bench conns -p "$port" --clients "$CONNS" --pid "$pid" --json >"$work/conns.out" 2>&1 || {
    cat "$work/conns.out"; exit 1; }
  line=$(tail -n 1 "$work/conns.out")
  before=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rss_before_kb"])' "$line")
  after=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rss_after_kb"])' "$line")
  report "idle connection (TCP, 3.1.1)" "$CONNS" "$before" "$after"
  stop

  for mode in idle-sub idle-sub5; do
    name="idle subscribed (3.1.1)"
    [ "$mode" = idle-sub5 ] && name="idle subscribed (5.0)"
    start; idle_sub "$mode" "mqttd $name"; ours=$per; stop
    if [ "$MOSQUITTO" = 1 ]; then
      start_mosquitto; idle_sub "$mode" "mosquitto $name"; theirs=$per; stop
      awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "  %s: mqttd %d B, mosquitto %d B, mqttd/mosquitto = %.2f\n", "'"$name"'", a, b, a / b }'
    fi
  done
fi

if [ "$SESSIONS" -gt 0 ]; then
  start
  before=$(settled)
  python3 "$client" "$port" sessions "$SESSIONS" "$PAYLOAD"
  after=$(settled)
  report "offline persistent session" "$SESSIONS" "$before" "$after"
  stop
fi

if [ "$QUEUED" -gt 0 ]; then
  start
  python3 "$client" "$port" queued-sub 0 "$PAYLOAD"
  before=$(settled)
  python3 "$client" "$port" queued "$QUEUED" "$PAYLOAD"
  after=$(settled)
  report "queued QoS 1 message" "$QUEUED" "$before" "$after"
  stop
fi

if [ "$RETAINED" -gt 0 ]; then
  start
  before=$(settled)
  python3 "$client" "$port" retained "$RETAINED" "$PAYLOAD"
  after=$(settled)
  report "retained message" "$RETAINED" "$before" "$after"
  stop
fi
