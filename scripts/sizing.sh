#!/usr/bin/env bash
# sizing.sh: measures mqttd's resident memory (VmRSS) per idle connection,
# per offline persistent session, per queued QoS 1 message and per retained
# message, for docs/operations.md.
#
#   bash scripts/sizing.sh [CONNS] [SESSIONS] [QUEUED] [RETAINED] [PAYLOAD]
#
# Defaults: 10000 connections, 10000 sessions, 50000 queued messages, 50000
# retained messages, 100-byte payloads. Each figure is (RSS after - RSS
# before) / count against a fresh broker (persistence on, the default store,
# persistence_sync always), measured once the RSS has settled. Idle
# connections are opened by `mqtt bench conns --pid`; the rest by a small
# MQTT 3.1.1 client written in Python below (no library needed).
# PERSISTENCE=false measures without the store.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${1:-10000}
SESSIONS=${2:-10000}
QUEUED=${3:-50000}
RETAINED=${4:-50000}
PAYLOAD=${5:-100}
PERSISTENCE=${PERSISTENCE:-true}

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
  "$work/mqttd" -c "$work/mqttd.conf" &
  pid=$!
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1).close()" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "mqttd did not start"; cat "$work/mqttd.log"; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; pid=; rm -rf "$work/data"; }

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
# settled: the RSS once two readings a second apart differ by < 1%.
settled() {
  local a b
  a=$(rss)
  for _ in $(seq 30); do
    sleep 1
    b=$(rss)
    if [ $(( (a > b ? a - b : b - a) * 100 )) -le "$b" ]; then break; fi
    a=$b
  done
  echo "$b"
}
report() { # name count before_kb after_kb
  awk -v n="$1" -v c="$2" -v a="$3" -v b="$4" \
    'BEGIN { printf "%-32s %8d  RSS %7d kB -> %7d kB  %6.0f bytes each\n", n, c, a, b, (b - a) * 1024 / c }'
}

client="$work/client.py"
cat >"$client" <<'EOF'
# A minimal MQTT 3.1.1 client for sizing.sh: sessions | queued | retained.
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

def connect(port, cid, clean):
    s = socket.create_connection(("127.0.0.1", port))
    body = s16("MQTT") + bytes([4, 0x02 if clean else 0x00]) + struct.pack(">H", 60) + s16(cid)
    s.sendall(b"\x10" + rl(len(body)) + body)
    ack = recvn(s, 4)
    if ack[0] != 0x20 or ack[3] != 0: raise SystemExit("CONNACK %r" % ack)
    return s

def subscribe(s, flt, qos):
    body = struct.pack(">H", 1) + s16(flt) + bytes([qos])
    s.sendall(b"\x82" + rl(len(body)) + body)
    if recvn(s, 5)[0] != 0x90: raise SystemExit("no SUBACK")

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
if what == "sessions":
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

echo "mqttd sizing: $(uname -srm), $(nproc) cores, $(go version | cut -d' ' -f3), persistence $PERSISTENCE, payload $PAYLOAD B"

start
"$work/mqtt" bench conns -p "$port" --clients "$CONNS" --pid "$pid" --json >"$work/conns.out" 2>&1 || {
  cat "$work/conns.out"; exit 1; }
line=$(tail -n 1 "$work/conns.out")
before=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rss_before_kb"])' "$line")
after=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rss_after_kb"])' "$line")
report "idle connection (TCP, 3.1.1)" "$CONNS" "$before" "$after"
stop

start
before=$(settled)
python3 "$client" "$port" sessions "$SESSIONS" "$PAYLOAD"
after=$(settled)
report "offline persistent session" "$SESSIONS" "$before" "$after"
stop

start
python3 "$client" "$port" queued-sub 0 "$PAYLOAD"
before=$(settled)
python3 "$client" "$port" queued "$QUEUED" "$PAYLOAD"
after=$(settled)
report "queued QoS 1 message" "$QUEUED" "$before" "$after"
stop

start
before=$(settled)
python3 "$client" "$port" retained "$RETAINED" "$PAYLOAD"
after=$(settled)
report "retained message" "$RETAINED" "$before" "$after"
stop
