#!/usr/bin/env bash
# Interop checks of mqttd against real third-party clients: Debian's
# mosquitto_pub / mosquitto_sub and Python paho-mqtt (MQTT 3.1 and 3.1.1).
# Installs what it needs with apt-get, starts its own mqttd on a free loopback
# port, and fails loudly on the first mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v mosquitto_pub >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
/usr/bin/python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 || need_pkgs+=(python3-paho-mqtt)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "interop: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "interop: FAIL: $*" >&2; [ -f "$work/mqttd.log" ] && tail -n 30 "$work/mqttd.log" >&2; exit 1; }
pass() { echo "interop: ok: $*"; passed=$((passed + 1)); }
passed=0

go build -o "$work/mqttd" ./cmd/mqttd
go build -o "$work/mqtt" ./cmd/mqtt
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# From the work directory: its default store (./data) goes there, not into the checkout.
(cd "$work" && exec "$work/mqttd" -p "$port" -v) >"$work/mqttd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  mosquitto_pub -p "$port" -t interop/ping -m x 2>/dev/null && break
  sleep 0.1
done
mosquitto_pub -p "$port" -t interop/ping -m x || fail "mqttd did not start on port $port"

P=(-h 127.0.0.1 -p "$port")

# expect NAME FILE EXPECTED: compare a subscriber's output with what it should be.
expect() {
  local got
  got=$(cat "$2")
  [ "$got" == "$3" ] || fail "$1: got [$got], want [$3]"
  pass "$1"
}

# wait_subscribed FILE: mosquitto_sub -d prints "Subscribed" once its SUBACK came.
wait_subscribed() {
  for _ in $(seq 100); do grep -q "Subscribed" "$1" 2>/dev/null && return 0; sleep 0.05; done
  fail "subscriber in $1 never got its SUBACK"
}

# 1. Retained message reaches a late subscriber, with the retained flag (-R not given).
mosquitto_pub "${P[@]}" -t interop/retained -m "kept" -r -q 1
mosquitto_sub "${P[@]}" -t 'interop/retained' -v -C 1 -W 5 >"$work/retained.out" || fail "retained: no message"
expect "retained message delivered to a late subscriber" "$work/retained.out" "interop/retained kept"
# Cleared by an empty retained payload.
mosquitto_pub "${P[@]}" -t interop/retained -r -n
if mosquitto_sub "${P[@]}" -t 'interop/retained' -C 1 -W 1 >"$work/cleared.out" 2>/dev/null; then
  fail "retained: still there after an empty retained publish: $(cat "$work/cleared.out")"
fi
pass "empty retained payload clears the retained message"

# 2. QoS 1 and QoS 2 round trips, with wildcard subscriptions.
for q in 1 2; do
  stdbuf -oL mosquitto_sub "${P[@]}" -t "interop/q$q/#" -q "$q" -v -C 3 -W 10 -d >"$work/q$q.raw" &
  sp=$!
  wait_subscribed "$work/q$q.raw"
  for i in 1 2 3; do mosquitto_pub "${P[@]}" -t "interop/q$q/m$i" -m "payload $i" -q "$q"; done
  wait "$sp" || fail "QoS $q subscriber exited with an error"
  grep -v '^Client\|^Subscribed' "$work/q$q.raw" >"$work/q$q.out" || true
  expect "QoS $q messages delivered in order" "$work/q$q.out" "interop/q$q/m1 payload 1
interop/q$q/m2 payload 2
interop/q$q/m3 payload 3"
  grep -q "received PUBLISH (d0, q$q" "$work/q$q.raw" || fail "QoS $q: subscriber did not receive QoS $q"
  pass "QoS $q delivered at QoS $q"
done

# 3. Persistent session (-c): a subscriber away while messages are published
#    at QoS 1 and 2 catches up when it comes back.
stdbuf -oL mosquitto_sub "${P[@]}" -i interop-persistent -c -q 2 -t 'interop/persist/#' -C 1 -W 5 -d >"$work/persist0.raw" &
sp=$!
wait_subscribed "$work/persist0.raw"
mosquitto_pub "${P[@]}" -t interop/persist/first -m first -q 1
wait "$sp" || fail "persistent subscriber: first message"
for i in 1 2 3 4; do mosquitto_pub "${P[@]}" -t "interop/persist/m$i" -m "away $i" -q $((1 + i % 2)); done
mosquitto_sub "${P[@]}" -i interop-persistent -c -q 2 -t 'interop/persist/#' -v -C 4 -W 5 >"$work/persist.raw" ||
  fail "persistent session: did not catch up ($(cat "$work/persist.raw"))"
# libmosquitto hands a QoS 2 message to the application at PUBREL, a QoS 1
# one at once: compare as a set.
sort "$work/persist.raw" >"$work/persist.out"
expect "persistent session (-c) catches up on messages sent while away" "$work/persist.out" "interop/persist/m1 away 1
interop/persist/m2 away 2
interop/persist/m3 away 3
interop/persist/m4 away 4"

# 4. Will of a client that is killed.
stdbuf -oL mosquitto_sub "${P[@]}" -t 'interop/will/#' -v -C 1 -W 10 -d >"$work/will.raw" &
wp=$!
wait_subscribed "$work/will.raw"
stdbuf -oL mosquitto_sub "${P[@]}" -i interop-dying -t interop/nothing -k 60 --will-topic interop/will/dying --will-payload "gone" --will-qos 1 -d >"$work/dying.raw" &
dp=$!
wait_subscribed "$work/dying.raw"
kill -9 "$dp"
wait "$wp" || fail "will: not delivered"
grep -v '^Client\|^Subscribed' "$work/will.raw" >"$work/will.out" || true
expect "will published when a client is killed" "$work/will.out" "interop/will/dying gone"

# 5. MQTT 5 basics with mosquitto clients.
stdbuf -oL mosquitto_sub "${P[@]}" -V mqttv5 -t 'interop/v5/#' -q 1 -v -C 1 -W 5 -d >"$work/v5.raw" &
sp=$!
wait_subscribed "$work/v5.raw"
mosquitto_pub "${P[@]}" -V mqttv5 -t interop/v5/a -m five -q 1
wait "$sp" || fail "v5 subscriber"
grep -v '^Client\|^Subscribed' "$work/v5.raw" >"$work/v5.out" || true
expect "MQTT 5 publish/subscribe with mosquitto clients" "$work/v5.out" "interop/v5/a five"

# 6. Our CLI against Mosquitto's: mqtt sub hears mosquitto_pub, mosquitto_sub
#    hears mqtt pub, with the same flags and the same output.
stdbuf -oL "$work/mqtt" sub "${P[@]}" -t 'interop/cli/#' -q 1 -v -C 2 -W 10 -d >"$work/cli1.raw" 2>&1 &
sp=$!
wait_subscribed "$work/cli1.raw"
mosquitto_pub "${P[@]}" -t interop/cli/a -m "from mosquitto_pub" -q 1
mosquitto_pub "${P[@]}" -t interop/cli/b -n -q 1
wait "$sp" || fail "mqtt sub: $(cat "$work/cli1.raw")"
grep -v '^Client\|^Subscribed' "$work/cli1.raw" >"$work/cli1.out" || true
expect "mqtt sub -v receives mosquitto_pub (payload and -n)" "$work/cli1.out" "interop/cli/a from mosquitto_pub
interop/cli/b (null)"
stdbuf -oL mosquitto_sub "${P[@]}" -t 'interop/cli2/#' -q 2 -F '%t %p %q' -C 1 -W 10 -d >"$work/cli2.raw" &
sp=$!
wait_subscribed "$work/cli2.raw"
"$work/mqtt" pub "${P[@]}" -t interop/cli2/x -m "from mqtt pub" -q 2 || fail "mqtt pub exited with an error"
wait "$sp" || fail "mosquitto_sub: $(cat "$work/cli2.raw")"
grep -v '^Client\|^Subscribed' "$work/cli2.raw" >"$work/cli2.out" || true
expect "mosquitto_sub -F receives mqtt pub at QoS 2" "$work/cli2.out" "interop/cli2/x from mqtt pub 2"

# 7. Python paho, MQTT 3.1 and 3.1.1.
/usr/bin/python3 scripts/interop_paho.py 127.0.0.1 "$port" || fail "python paho"
pass "python paho-mqtt (3.1 and 3.1.1)"

echo "interop: $passed passed, 0 failed"
