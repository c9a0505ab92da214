#!/usr/bin/env bash
# Cluster interop: 3 mqttd nodes started by scripts/cluster.sh on free
# loopback ports, checked with Debian's mosquitto_sub on one node and
# mosquitto_pub on another: QoS 0/1/2 (delivered at the minimum of published
# and granted), per-publisher order, + and # wildcards, # not matching
# $-topics, a retained message set on one node, seen on another and cleared
# from the third, topics with a space, '.', '*' and '>', and a client id
# taken over across nodes. Installs mosquitto-clients when missing; prints a
# passed/failed count, exits 1 on any failure and always stops the nodes.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

if ! command -v mosquitto_pub >/dev/null 2>&1; then
  echo "interop_cluster: installing mosquitto-clients"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mosquitto-clients >/dev/null
fi

work=$(mktemp -d)
export MQTTD_CLUSTER_DIR="$work/cluster"
# Two free runs of 3 loopback ports: MQTT on MQTT_BASE+1..3, links on LINK_BASE+1..3.
read -r MQTT_BASE LINK_BASE < <(python3 - <<'EOF'
import random, socket
def free(base):
    socks = []
    try:
        for p in range(base + 1, base + 4):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()
bases = []
while len(bases) < 2:
    b = random.randrange(20000, 60000, 10)
    if b not in bases and free(b):
        bases.append(b)
print(*bases)
EOF
)
export MQTT_BASE LINK_BASE
A=$((MQTT_BASE + 1)) B=$((MQTT_BASE + 2)) C=$((MQTT_BASE + 3))

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/cluster.sh down --clean >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() { # NAME GOT WANT
  if [ "$2" == "$3" ]; then
    echo "interop_cluster: PASS: $1"
    passed=$((passed + 1))
  else
    echo "interop_cluster: FAIL: $1: got [$2], want [$3]" >&2
    failed=$((failed + 1))
  fi
}

start=$SECONDS
scripts/cluster.sh up >"$work/up.out" 2>&1 || {
  cat "$work/up.out" >&2
  tail -n 20 "$MQTTD_CLUSTER_DIR"/n*.log >&2 2>/dev/null || true
  echo "interop_cluster: the cluster did not start" >&2
  exit 1
}

pub() { # PORT ARGS...
  local port=$1
  shift
  mosquitto_pub -h 127.0.0.1 -p "$port" "$@"
}

# sub NAME PORT ARGS...: a mosquitto_sub in the background printing
# topic|qos|retain|payload lines into $work/NAME.out.
sub() {
  local name=$1 port=$2
  shift 2
  stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -F '%t|%q|%r|%p' "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  eval "pid_$name=$!"
}

# ready NAME PORT TOPIC: publish "probe" on TOPIC from PORT until subscriber
# NAME has it: its subscription is then known to the publishing node (the
# interest crosses the cluster asynchronously after the SUBACK).
ready() {
  for _ in $(seq 150); do
    pub "$2" -t "$3" -m probe 2>/dev/null || true
    grep -Fxq "$3|0|0|probe" "$work/$1.out" && return 0
    sleep 0.1
  done
  echo "interop_cluster: subscriber $1 never got a probe on [$3] from port $2" >&2
  return 1
}

# got NAME N: wait (10 s at most) for N lines other than probes from
# subscriber NAME and print them in order of arrival.
got() {
  for _ in $(seq 100); do
    [ "$(grep -vc '|probe$' "$work/$1.out" || true)" -ge "$2" ] && break
    sleep 0.1
  done
  grep -v '|probe$' "$work/$1.out" || true
}

stop() { # NAME
  local p="pid_$1"
  kill "${!p}" 2>/dev/null || true
  wait "${!p}" 2>/dev/null || true
}

# 0. The cluster has formed: a message published on B and C reaches A.
sub form "$A" -t 'ic/form/#'
if ready form "$B" ic/form/b && ready form "$C" ic/form/c; then
  check "cluster formed: B and C reach a subscriber on A" ok ok
else
  check "cluster formed: B and C reach a subscriber on A" "no message" ok
  echo "interop_cluster: $passed passed, $((failed)) failed"
  tail -n 20 "$MQTTD_CLUSTER_DIR"/n*.log >&2
  exit 1
fi
stop form

# 1. QoS 0, 1 and 2 published on B to subscribers on A granted 0, 1 and 2:
#    delivered at the minimum of the two [MQTT-3.8.4-8].
for g in 0 1 2; do
  sub "qos$g" "$A" -q "$g" -t "ic/qos/g$g/#"
done
for g in 0 1 2; do
  ready "qos$g" "$B" "ic/qos/g$g/probe"
  for q in 0 1 2; do pub "$B" -q "$q" -t "ic/qos/g$g/p$q" -m "m$q"; done
done
for g in 0 1 2; do
  lines=$(got "qos$g" 3 | sort)
  for q in 0 1 2; do
    want="ic/qos/g$g/p$q|$((q < g ? q : g))|0|m$q"
    line=$(grep -F "ic/qos/g$g/p$q|" <<<"$lines" || true)
    check "QoS $q published on B, QoS $g granted on A: delivered at QoS $((q < g ? q : g))" "$line" "$want"
  done
  check "QoS $g subscriber on A: exactly 3 messages" "$(wc -l <<<"$lines" | tr -d ' ')" 3
  stop "qos$g"
done

# 2. One publisher's messages arrive in order across the link (QoS 1).
sub order "$A" -q 1 -t 'ic/order/#'
ready order "$B" ic/order/probe
seq 1 50 | pub "$B" -q 1 -t ic/order/n -l
want=$(seq 1 50 | sed 's/^/ic\/order\/n|1|0|/')
check "50 QoS 1 messages from one publisher on B arrive on A in order" "$(got order 50)" "$want"
stop order

# 3. Wildcards: + matches one level, # the parent and every level below [MQTT-4.7.1-2].
sub wild "$A" -t 'ic/w/+/end' -t 'ic/w/deep/#'
ready wild "$B" ic/w/probe/end
ready wild "$B" ic/w/deep/probe
for t in ic/w/a/end ic/w/a/b/end ic/w/deep ic/w/deep/1/2 ic/w/other; do pub "$B" -q 1 -t "$t" -m "$t"; done
pub "$B" -q 1 -t ic/w/last/end -m end
check "+ and # filters on A, publishes on B" "$(got wild 4 | sort)" "ic/w/a/end|0|0|ic/w/a/end
ic/w/deep/1/2|0|0|ic/w/deep/1/2
ic/w/deep|0|0|ic/w/deep
ic/w/last/end|0|0|end"
stop wild

# 4. # does not match topics starting with $ [MQTT-4.7.2-1], which still
#    cross the cluster to a filter naming them.
sub hash "$A" -t '#'
sub dollar "$A" -t '$ic/#'
ready hash "$B" ic/dollar/probe
ready dollar "$B" '$ic/probe'
pub "$B" -q 1 -t '$ic/x' -m dollar
check "\$ic/x published on B reaches \$ic/# on A" "$(got dollar 1)" '$ic/x|0|0|dollar'
pub "$B" -q 1 -t ic/dollar/end -m end
check "# on A: not the \$-topic, only ic/dollar/end" "$(got hash 1)" "ic/dollar/end|0|0|end"
stop hash
stop dollar

# 5. The MQTT topic is data on the link: a space, '.', '*' and '>' are fine.
odd='ic/with space/a.b'
sub odd "$A" -q 1 -t "$odd"
ready odd "$B" "$odd"
pub "$B" -q 1 -t "$odd" -m dotted
check "topic with a space and a '.' across nodes" "$(got odd 1)" "$odd|1|0|dotted"
stop odd
odd2='ic/star*/gt>/x.y'
sub odd2 "$A" -q 1 -t 'ic/+/gt>/#'
ready odd2 "$B" "$odd2"
pub "$B" -q 1 -t "$odd2" -m nats
check "topic with '*' and '>' across nodes" "$(got odd2 1)" "$odd2|1|0|nats"
stop odd2

# 6. Retained: set on B, delivered to a new subscriber on C, cleared from A.
pub "$B" -q 1 -r -t ic/ret/x -m kept
seen=""
for _ in $(seq 30); do
  seen=$(mosquitto_sub -h 127.0.0.1 -p "$C" -q 1 -t ic/ret/x -C 1 -W 2 -F '%t|%q|%r|%p' 2>/dev/null || true)
  [ -n "$seen" ] && break
  sleep 0.2
done
check "retained message set on B, new subscriber on C" "$seen" "ic/ret/x|1|1|kept"
pub "$A" -q 1 -r -t ic/ret/x -n
for port in "$C" "$B"; do
  seen=x
  for _ in $(seq 30); do
    seen=$(mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -t ic/ret/x -C 1 -W 2 -F '%t|%q|%r|%p' 2>/dev/null || true)
    [ -z "$seen" ] && break
    sleep 0.2
  done
  check "retained message cleared from A, gone on port $port" "$seen" ""
done

# 7. Client id takeover across nodes (MQTT 5): the session on A is closed
#    with DISCONNECT 0x8E (142) when the same id connects on B [MQTT-3.1.4-3].
sub takeA "$A" -V 5 -i ic-takeover -t ic/take/# -d
ready takeA "$B" ic/take/probe
sub takeB "$B" -V 5 -i ic-takeover -t ic/take/# -d
exited=no
for _ in $(seq 100); do
  if ! kill -0 "$pid_takeA" 2>/dev/null; then
    exited=yes
    break
  fi
  sleep 0.1
done
check "ic-takeover on A exits when ic-takeover connects on B" "$exited" yes
check "A's client got DISCONNECT 0x8E" "$(grep -c 'Received DISCONNECT (142)' "$work/takeA.out" || true)" 1
ready takeB "$C" ic/take/probe2
check "the client on B stays connected and receives from C" "$(kill -0 "$pid_takeB" 2>/dev/null && echo running)" running
stop takeB

echo "interop_cluster: $passed passed, $failed failed ($((SECONDS - start)) s)"
if [ "$failed" -gt 0 ]; then
  for f in "$MQTTD_CLUSTER_DIR"/n*.log "$MQTTD_CLUSTER_DIR"/n*.out; do echo "== $f"; tail -n 20 "$f"; done >&2
  exit 1
fi
