#!/usr/bin/env bash
# scale.sh: how mqttd's cost grows with work (issue 11), for
# docs/performance.md ("How cost grows with work"). Not part of CI.
#
#   bash scripts/scale.sh [ROW ...]        QUICK=1 bash scripts/scale.sh
#
# Rows (default: all four, in this order):
#   conns     0, 1k, 5k, 10k, 19k idle subscribed connections (`mqtt bench
#             conns --subscribe --pid`): RSS per connection, CONNECT+SUBSCRIBE
#             rate, and 200 QoS 1 pairs (`mqtt bench pairs`) run while the
#             idle connections are held.
#   subs      10k, 100k, 1M subscriptions over SUB_CONNS (default 100)
#             connections, three shapes: exact `s/<n>/x`, trailing wildcard
#             `s/<n>/+`, middle wildcard `s/+/<n>`: RSS per subscription,
#             SUBSCRIBE rate (pipelined, one filter per SUBSCRIBE), then
#             MSGS (default 3M; QUICK: 100k) QoS 0 messages, each to a topic
#             that matches exactly one subscription, chosen at random over all
#             of them (so the index's match cache mostly misses). 3M spans
#             several garbage collections even with 1M subscriptions (a
#             collection marks the whole index: see docs/performance.md).
#   retained  100k, 300k, 1M retained messages (64 B): RSS per message, time to
#             store them (QoS 0, then a PINGREQ round trip), time for a `#`
#             subscriber to receive all, mean time of a SUBSCRIBE to one exact
#             topic (SUBACK + its message) and to `r/<k>/+` (1,000 messages).
#   payload   64 B, 1 KB, 16 KB, 64 KB: 100 QoS 1 pairs and QoS 1 fan-in 50 -> 1
#             (`mqtt bench`, --max-outstanding 100), msg/s, MB/s, peak RSS
#             (VmHWM) and RSS at the end.
#
# One fresh mqttd per point, `persistence false`, `max_queued_messages 0`,
# `max_connections -1` (subs and retained rows: also a 4 GiB
# `max_backlog_bytes`, see big_backlog), pinned to core 0 (taskset), the load
# to core 1. RSS is VmRSS from /proc/PID/status once two readings a second
# apart differ by < 1% (as scripts/sizing.sh). The subscription and retained rows use the small
# raw-socket MQTT client below (Python, no library): packets are built before
# the clock starts and replies are counted by bytes, so the client is not what
# is measured. QUICK=1 runs fewer and smaller points (< 2 min). Overrides: DUR
# (seconds per `mqtt bench` run, default 5; QUICK: 2), SUB_CONNS, MSGS, and the
# points as space-separated lists: CONN_POINTS, SUB_POINTS, SUB_KINDS,
# RET_POINTS, PAYLOADS (e.g. SUB_KINDS=exact SUB_POINTS=1000000 ... subs).
# Prints a markdown table per row at the end; the 1-minute load average at
# each point is in the last column, as the machine may be shared (the run
# itself accounts for up to 2 of it).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DUR=${DUR:-2} MSGS=${MSGS:-100000}
  CONN_POINTS=${CONN_POINTS:-0 1000 5000} SUB_POINTS=${SUB_POINTS:-10000 100000} SUB_KINDS=${SUB_KINDS:-exact wild-mid}
  RET_POINTS=${RET_POINTS:-100000} PAYLOADS=${PAYLOADS:-64 16384}
else
  DUR=${DUR:-5} MSGS=${MSGS:-3000000}
  CONN_POINTS=${CONN_POINTS:-0 1000 5000 10000 19000} SUB_POINTS=${SUB_POINTS:-10000 100000 1000000}
  SUB_KINDS=${SUB_KINDS:-exact wild-tail wild-mid} RET_POINTS=${RET_POINTS:-100000 300000 1000000}
  PAYLOADS=${PAYLOADS:-64 1024 16384 65536}
fi
SUB_CONNS=${SUB_CONNS:-100}
rows=("$@")
[ ${#rows[@]} -eq 0 ] && rows=(conns subs retained payload)
for r in "${rows[@]}"; do
  case $r in conns | subs | retained | payload) ;; *) echo "scale: unknown row $r (conns, subs, retained, payload)" >&2; exit 2 ;; esac
done

if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_broker=(taskset -c 0) pin_load=(taskset -c 1)
else
  pin_broker=() pin_load=()
  echo "scale: one core or no taskset: nothing pinned, the figures mix broker and load" >&2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
pid='' hold=''
cleanup() {
  if [ -n "$hold" ]; then kill "$hold" 2>/dev/null || true; wait "$hold" 2>/dev/null || true; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/mqttd" ./cmd/mqttd
go build -o "$work/mqtt" ./cmd/mqtt
results=$work/results.jsonl
: >"$results"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start [LINE]: a fresh mqttd pinned to core 0, LINE added to its
# configuration; sets $P and $pid.
start() {
  P=$(port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_connections -1\nsys_interval 0\n%s\n' \
    "$P" "${1:-}" >"$work/mqttd.conf"
  "${pin_broker[@]}" "$work/mqttd" -c "$work/mqttd.conf" >"$work/mqttd.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1',$P),1).close()" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "scale: mqttd did not start" >&2; cat "$work/mqttd.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
# settled: VmRSS (kB) once six readings a second apart (five seconds) stay
# within 1% of the first of them, as scripts/sizing.sh: mqttd gives the
# heap's spare memory back a few seconds after a wave of connections
# (internal/memtrim).
settled() {
  local a b n=0
  a=$(status_kb VmRSS)
  for _ in $(seq 60); do
    sleep 1
    b=$(status_kb VmRSS)
    if [ $(((a > b ? a - b : b - a) * 100)) -le "$a" ]; then
      n=$((n + 1))
      if [ "$n" -ge 5 ]; then break; fi
    else
      a=$b n=0
    fi
  done
  echo "$b"
}
load1() { cut -d' ' -f1 /proc/loadavg; }

# record JSON: appends one result object to the results.
record() { echo "$1" >>"$results"; echo "  $1" >&2; }

# mqbench ARGS...: one `mqtt bench` run on the load core; prints its JSON
# line ({} when none). Exit status 3 (QoS 1 loss) is a result, not a failure.
mqbench() {
  local js
  js=$("${pin_load[@]}" "$work/mqtt" bench "$@" -p "$P" --json 2>"$work/bench.err" | tail -n 1 || true)
  case $js in
  "{"*) echo "$js" ;;
  *) echo "scale: mqtt bench $*: no result" >&2; tail -n 5 "$work/bench.err" >&2; echo "{}" ;;
  esac
}

client="$work/scale.py"
cat >"$client" <<'EOF'
# The raw-socket MQTT 3.1.1 client of scale.sh: subs | retained. It prints a
# line at each step and waits for a line on stdin before the next, so that
# the script can read the broker's RSS in between.
import json, random, selectors, socket, struct, sys, threading, time

def rl(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out

def s16(s):
    b = s.encode(); return struct.pack(">H", len(b)) + b

def recvn(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk: raise SystemExit("scale.py: connection closed by the broker")
        buf += chunk
    return bytes(buf)

def connect(port, cid):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = s16("MQTT") + bytes([4, 2]) + struct.pack(">H", 0) + s16(cid)  # clean, no keep alive
    s.sendall(b"\x10" + rl(len(body)) + body)
    ack = recvn(s, 4)
    if ack[0] != 0x20 or ack[3] != 0: raise SystemExit("scale.py: CONNACK %r" % ack)
    return s

def subscribe_pkt(pid, flt, qos):
    body = struct.pack(">H", pid) + s16(flt) + bytes([qos])
    return b"\x82" + rl(len(body)) + body

def publish_pkt(t, payload, retain=False):
    body = s16(t) + payload
    return bytes([0x31 if retain else 0x30]) + rl(len(body)) + body

def check_subacks(data, k, qos):
    # k SUBACKs of one filter each: 90 03 id id rc
    if len(data) != 5 * k or data[0::5].count(0x90) != k or data[4::5].count(qos) != k:
        raise SystemExit("scale.py: a SUBSCRIBE was refused or answered oddly")

def step(line):
    print(line, flush=True)
    if not sys.stdin.readline(): raise SystemExit(0)

def read_all(socks, want, timeout):
    # Reads from every socket until want bytes in total arrived; returns the
    # time of the last byte (or raises after timeout without progress).
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False); sel.register(s, selectors.EVENT_READ)
    got, last = 0, time.monotonic()
    buf = bytearray(1 << 20)
    while got < want:
        ev = sel.select(timeout)
        if not ev: raise SystemExit("scale.py: %d of %d bytes after %ss without progress (QoS 0 dropped over max_backlog_bytes?)" % (got, want, timeout))
        for key, _ in ev:
            try: n = key.fileobj.recv_into(buf)
            except BlockingIOError: continue
            if n == 0: raise SystemExit("scale.py: connection closed by the broker")
            got += n
        last = time.monotonic()
    for s in socks:
        sel.unregister(s); s.setblocking(True)
    return last

what, port = sys.argv[1], int(sys.argv[2])
random.seed(1)
if what == "subs":
    kind, n, nconns, msgs = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    flt = {"exact": "s/%07d/x", "wild-tail": "s/%07d/+", "wild-mid": "s/+/%07d"}[kind]
    top = {"exact": "s/%07d/x", "wild-tail": "s/%07d/x", "wild-mid": "s/p/%07d"}[kind]
    conns = [connect(port, "scale-sub-%d" % i) for i in range(nconns)]
    blobs = []
    for c in range(nconns):
        blobs.append(b"".join(subscribe_pkt(k % 65535 + 1, flt % i, 0) for k, i in enumerate(range(c, n, nconns))))
    step("connected")
    t0 = time.monotonic()
    for s, blob in zip(conns, blobs):
        s.sendall(blob)
    for c, s in enumerate(conns):
        k = len(range(c, n, nconns))
        check_subacks(recvn(s, 5 * k), k, 0)
    sub_s = time.monotonic() - t0
    del blobs
    step("subscribed")
    payload = b"p" * 16
    pub = connect(port, "scale-pub")
    # At most 1M distinct messages built, sent reps times over (the match
    # cache holds 4,096 topics: a repeat after 1M is still a miss).
    reps = max(1, msgs // 1000000)
    base = msgs // reps
    msgs = base * reps
    blob = b"".join(publish_pkt(top % random.randrange(n), payload) for _ in range(base))
    size = len(blob) // base  # every topic has the same length: so has every delivery
    def send():
        for _ in range(reps): pub.sendall(blob)
    t0 = time.monotonic()
    th = threading.Thread(target=send); th.start()
    t1 = read_all(conns, msgs * size, 60)
    th.join()
    print("result " + json.dumps({"subscribe_s": sub_s, "subscribes_per_s": n / sub_s,
          "publish_s": t1 - t0, "msgs_per_s": msgs / (t1 - t0), "msgs": msgs}), flush=True)
elif what == "retained":
    n = int(sys.argv[3])
    payload = b"r" * 64
    name = lambda j: "r/%04d/%07d" % (j // 1000, j)
    pub = connect(port, "scale-retain")
    blob = b"".join(publish_pkt(name(j), payload, True) for j in range(n))
    size = len(blob) // n
    t0 = time.monotonic()
    pub.sendall(blob + b"\xc0\x00")   # then PINGREQ: its PINGRESP comes once all are stored
    if recvn(pub, 2) != b"\xd0\x00": raise SystemExit("scale.py: no PINGRESP")
    store_s = time.monotonic() - t0
    del blob
    pub.sendall(b"\xe0\x00"); pub.close()
    step("stored")
    s = connect(port, "scale-all")
    t0 = time.monotonic()
    s.sendall(subscribe_pkt(1, "#", 0))
    check_subacks(recvn(s, 5), 1, 0)
    read_all([s], n * size, 30)
    all_s = time.monotonic() - t0
    s.sendall(b"\xe0\x00"); s.close()
    s = connect(port, "scale-narrow")
    k, t0 = 1000, time.monotonic()
    for i in range(k):
        s.sendall(subscribe_pkt(i + 1, name(random.randrange(n)), 0))
        check_subacks(recvn(s, 5), 1, 0); recvn(s, size)
    exact_us = (time.monotonic() - t0) / k * 1e6
    w, t0 = 20, time.monotonic()
    for i in range(w):
        g = random.randrange(n // 1000)
        s.sendall(subscribe_pkt(k + i + 1, "r/%04d/+" % g, 0))
        check_subacks(recvn(s, 5), 1, 0); recvn(s, 1000 * size)
    wild_ms = (time.monotonic() - t0) / w * 1e3
    s.sendall(b"\xe0\x00"); s.close()
    print("result " + json.dumps({"store_s": store_s, "stores_per_s": n / store_s, "all_s": all_s,
          "all_per_s": n / all_s, "exact_us": exact_us, "wild_ms": wild_ms}), flush=True)
EOF

# The subs and retained rows count QoS 0 deliveries by bytes: past
# max_backlog_bytes (8 MiB a connection by default) mqttd drops QoS 0
# messages for a client that reads slower than they come, which would stall
# the count. These rows raise the bound so that every message is delivered.
big_backlog='max_backlog_bytes 4294967296'

# drive MODE ARGS...: runs scale.py on the load core as a coprocess; the
# caller reads its lines with py_next and answers with go_on.
drive() {
  coproc PY { "${pin_load[@]}" python3 "$client" "$@" 2>"$work/py.err"; }
  # shellcheck disable=SC2153 # PY_PID is set by coproc
  py_pid=$PY_PID py_in=${PY[1]} py_out=${PY[0]}
}
py_next() { # sets $pyline
  if ! read -r pyline <&"$py_out"; then echo "scale: the client failed: $(cat "$work/py.err")" >&2; exit 1; fi
}
go_on() { echo go >&"$py_in"; }
done_py() { exec {py_in}>&- {py_out}<&-; wait "$py_pid" || true; }

row_conns() {
  local n before after js cj
  for n in $CONN_POINTS; do
    start
    before=$(settled) after=$before cj='{}'
    if [ "$n" -gt 0 ]; then
      "${pin_load[@]}" "$work/mqtt" bench conns -p "$P" --clients "$n" --subscribe --qos 1 --concurrency 100 \
        --duration 3600 --json >"$work/conns.out" 2>"$work/conns.err" &
      hold=$!
      for _ in $(seq 600); do
        grep -q 'holding them idle' "$work/conns.err" && break
        kill -0 "$hold" 2>/dev/null || break
        sleep 0.2
      done
      grep -q 'holding them idle' "$work/conns.err" || { echo "scale: conns $n did not connect" >&2; cat "$work/conns.err" >&2; exit 1; }
      after=$(settled)
    fi
    js=$(mqbench pairs --clients 200 --qos 1 --duration "$DUR" --drain 5)
    if [ -n "$hold" ]; then
      kill -TERM "$hold"; wait "$hold" 2>/dev/null || true; hold=
      cj=$(tail -n 1 "$work/conns.out")
      case $cj in "{"*) ;; *) cj='{}' ;; esac
    fi
    record "$(python3 - "$n" "$before" "$after" "$js" "$cj" "$(load1)" <<'EOF'
import json, sys
n, before, after = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
p, c = json.loads(sys.argv[4]), json.loads(sys.argv[5])
print(json.dumps({"row": "conns", "n": n, "rss_before_kb": before, "rss_after_kb": after,
      "bytes_per_conn": (after - before) * 1024 / n if n else 0, "connects_per_s": c.get("connects_per_s", 0),
      "open": c.get("connections", 0), "connect_errors": c.get("connect_errors", 0),
      "pairs_qos1": p.get("recv_msgs_per_s", 0), "pairs_lost": p.get("lost", -1), "load": float(sys.argv[6])}))
EOF
)"
    stop
  done
}

row_subs() {
  local kind n before mid after res
  for kind in $SUB_KINDS; do
    for n in $SUB_POINTS; do
      start "$big_backlog"
      before=$(settled)
      drive subs "$P" "$kind" "$n" "$SUB_CONNS" "$MSGS"
      py_next # connected
      mid=$(settled)
      go_on
      py_next # subscribed
      after=$(settled)
      go_on
      py_next; res=$pyline
      done_py
      record "$(python3 - "$kind" "$n" "$before" "$mid" "$after" "${res#result }" "$(load1)" <<'EOF'
import json, sys
kind, n, before, mid, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = json.loads(sys.argv[6])
r.update({"row": "subs", "kind": kind, "n": n, "rss_conns_kb": mid, "rss_after_kb": after,
          "bytes_per_sub": (after - mid) * 1024 / n, "load": float(sys.argv[7])})
print(json.dumps(r))
EOF
)"
      stop
    done
  done
}

row_retained() {
  local n before after res
  for n in $RET_POINTS; do
    start "$big_backlog"
    before=$(settled)
    drive retained "$P" "$n"
    py_next # stored
    after=$(settled)
    go_on
    py_next; res=$pyline
    done_py
    record "$(python3 - "$n" "$before" "$after" "${res#result }" "$(load1)" <<'EOF'
import json, sys
n, before, after = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = json.loads(sys.argv[4])
r.update({"row": "retained", "n": n, "rss_before_kb": before, "rss_after_kb": after,
          "bytes_per_msg": (after - before) * 1024 / n, "load": float(sys.argv[5])})
print(json.dumps(r))
EOF
)"
    stop
  done
}

row_payload() {
  local size flow js
  for size in $PAYLOADS; do
    for flow in pairs fanin; do
      start
      if [ "$flow" = pairs ]; then
        js=$(mqbench pairs --clients 100 --qos 1 --size "$size" --max-outstanding 100 --duration "$DUR" --drain 5)
      else
        js=$(mqbench fanin --clients 50 --qos 1 --size "$size" --max-outstanding 100 --duration "$DUR" --drain 5)
      fi
      record "$(python3 - "$flow" "$size" "$js" "$(status_kb VmHWM)" "$(status_kb VmRSS)" "$(load1)" <<'EOF'
import json, sys
d = json.loads(sys.argv[3])
print(json.dumps({"row": "payload", "flow": sys.argv[1], "size": int(sys.argv[2]), "msgs_per_s": d.get("recv_msgs_per_s", 0),
      "mb_per_s": d.get("recv_mb_per_s", 0), "lost": d.get("lost", -1), "hwm_kb": int(sys.argv[4]),
      "rss_end_kb": int(sys.argv[5]), "load": float(sys.argv[6])}))
EOF
)"
      stop
    done
  done
}

for row in "${rows[@]}"; do
  echo "== $row" >&2
  "row_$row"
done

echo
echo "mqttd scaling: $(uname -srm), $(nproc) cores, $(go version | cut -d' ' -f3), QUICK=$QUICK DUR=${DUR}s MSGS=$MSGS SUB_CONNS=$SUB_CONNS, broker on core 0, load on core 1"
python3 - "$results" <<'EOF'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
def k(x): return "%.0fk" % (x / 1e3) if x < 1e6 else "%gM" % (x / 1e6)
def tbl(head, lines):
    if not lines: return
    print(); print("| " + " | ".join(head) + " |"); print("|" + "---|" * len(head))
    for l in lines: print("| " + " | ".join(l) + " |")
tbl(["idle subscribed conns", "RSS", "bytes/conn", "CONNECT+SUBSCRIBE/s", "open / errors", "200 pairs QoS 1 msg/s", "lost", "load"],
    [[k(r["n"]) if r["n"] else "0", "%.1f MB" % (r["rss_after_kb"] / 1024), "%.0f" % r["bytes_per_conn"] if r["n"] else "-",
      "%.0f" % r["connects_per_s"] if r["n"] else "-", "%d / %d" % (r["open"], r["connect_errors"]) if r["n"] else "-",
      "%.0f" % r["pairs_qos1"], str(r["pairs_lost"]), "%.2f" % r["load"]] for r in rs if r["row"] == "conns"])
tbl(["filters", "subscriptions", "RSS", "bytes/sub", "SUBSCRIBE/s", "publish msg/s (QoS 0, 1 match each)", "load"],
    [[r["kind"], k(r["n"]), "%.1f MB" % (r["rss_after_kb"] / 1024), "%.0f" % r["bytes_per_sub"], "%.0f" % r["subscribes_per_s"],
      "%.0f" % r["msgs_per_s"], "%.2f" % r["load"]] for r in rs if r["row"] == "subs"])
tbl(["retained (64 B)", "RSS", "bytes/msg", "store s (msg/s)", "`#` receives all, s (msg/s)", "SUBSCRIBE 1 topic, µs",
     "SUBSCRIBE `r/<k>/+` (1,000), ms", "load"],
    [[k(r["n"]), "%.1f MB" % (r["rss_after_kb"] / 1024), "%.0f" % r["bytes_per_msg"], "%.2f (%.0f)" % (r["store_s"], r["stores_per_s"]),
      "%.2f (%.0f)" % (r["all_s"], r["all_per_s"]), "%.0f" % r["exact_us"], "%.2f" % r["wild_ms"], "%.2f" % r["load"]]
     for r in rs if r["row"] == "retained"])
tbl(["payload", "flow", "msg/s", "MB/s", "lost", "peak RSS", "RSS at end", "load"],
    [["%d B" % r["size"] if r["size"] < 1024 else "%d KB" % (r["size"] // 1024), r["flow"], "%.0f" % r["msgs_per_s"],
      "%.1f" % r["mb_per_s"], str(r["lost"]), "%.1f MB" % (r["hwm_kb"] / 1024), "%.1f MB" % (r["rss_end_kb"] / 1024),
      "%.2f" % r["load"]] for r in rs if r["row"] == "payload"])
EOF
