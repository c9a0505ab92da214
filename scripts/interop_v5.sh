#!/usr/bin/env bash
# MQTT 5 interop checks of mqttd against Debian's mosquitto_pub and
# mosquitto_sub (-V mqttv5): user properties (-D), message expiry, retained
# messages and the retain flag, request/response properties, shared
# subscriptions. Installs mosquitto-clients if missing, starts its own
# mqttd on a free loopback port and fails loudly on the first mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto_pub >/dev/null 2>&1; then
  echo "interop_v5: installing mosquitto-clients"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mosquitto-clients >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
fail() { echo "interop_v5: FAIL: $*" >&2; [ -f "$work/mqttd.log" ] && tail -n 30 "$work/mqttd.log" >&2; exit 1; }
pass() { echo "interop_v5: ok: $*"; passed=$((passed + 1)); }

go build -o "$work/mqttd" ./cmd/mqttd
cd "$work" # mqttd keeps its store under the working directory
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/mqttd" -p "$port" -v >"$work/mqttd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  mosquitto_pub -h 127.0.0.1 -p "$port" -t interop/ping -m x 2>/dev/null && break
  sleep 0.1
done
mosquitto_pub -h 127.0.0.1 -p "$port" -t interop/ping -m x || fail "mqttd did not start on port $port"

P=(-h 127.0.0.1 -p "$port" -V mqttv5)

# expect NAME GOT WANT
expect() {
  [ "$2" == "$3" ] || fail "$1: got [$2], want [$3]"
  pass "$1"
}

# wait_subscribed FILE: mosquitto_sub -d prints "Received SUBACK" once subscribed.
wait_subscribed() {
  for _ in $(seq 100); do grep -q "SUBACK" "$1" 2>/dev/null && return 0; sleep 0.05; done
  fail "subscriber in $1 never got its SUBACK"
}

# 1. User properties (-D publish user-property), in order, with content type,
#    to a live v5 subscriber; the retain flag of a live message is 0.
stdbuf -oL mosquitto_sub "${P[@]}" -d -t 'v5/props' -C 1 -W 5 -F 'MSG=%t|%p|%r|%P|%C|%R' >"$work/props.out" &
pids+=($!); sp=$!
wait_subscribed "$work/props.out"
mosquitto_pub "${P[@]}" -t v5/props -m hello -q 1 \
  -D publish user-property trace abc -D publish user-property hop 1 \
  -D publish content-type text/plain -D publish response-topic v5/reply
wait "$sp" || fail "user properties: subscriber failed: $(cat "$work/props.out")"
expect "user properties, content type, response topic" "$(grep '^MSG=' "$work/props.out")" \
  "MSG=v5/props|hello|0|trace:abc hop:1|text/plain|v5/reply"

# 2. Message expiry: a retained message is sent with the remaining interval;
#    one whose interval passed is not delivered.
mosquitto_pub "${P[@]}" -t v5/expiry/long -m keep -r -q 1 -D publish message-expiry-interval 100
mosquitto_pub "${P[@]}" -t v5/expiry/short -m gone -r -q 1 -D publish message-expiry-interval 1
sleep 2.2
out=$(mosquitto_sub "${P[@]}" -t 'v5/expiry/#' -W 2 -F '%t|%p|%r|%E' 2>/dev/null || true)
case "$out" in
  "v5/expiry/long|keep|1|97" | "v5/expiry/long|keep|1|98") pass "message expiry: remaining interval, expired dropped" ;;
  *) fail "message expiry: got [$out], want v5/expiry/long|keep|1|97 or 98 only" ;;
esac

# 3. Retained messages: a new v5 subscription gets the retained message with
#    retain 1 (retain handling 0); --remove-retained clears it; an empty
#    retained publish clears it too.
mosquitto_pub "${P[@]}" -t v5/ret/a -m one -r -q 1
out=$(mosquitto_sub "${P[@]}" -t 'v5/ret/#' -C 1 -W 5 -F '%t|%p|%r')
expect "retained on subscribe (retain handling 0)" "$out" "v5/ret/a|one|1"
mosquitto_sub "${P[@]}" -t 'v5/ret/#' --remove-retained --retained-only -W 2 >/dev/null 2>&1 || true
out=$(mosquitto_sub "${P[@]}" -t 'v5/ret/#' -W 1 -F '%t|%p' 2>/dev/null || true)
expect "retained cleared" "$out" ""

# 4. A v3.1.1 publisher's message reaches a v5 subscriber without properties,
#    a v5 message reaches a v3.1.1 subscriber (properties dropped).
stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv311 -d -t 'v5/mixed' -C 1 -W 5 -F 'MSG=%t|%p' >"$work/v3.out" &
pids+=($!); s3=$!
wait_subscribed "$work/v3.out"
mosquitto_pub "${P[@]}" -t v5/mixed -m from5 -D publish user-property k v
wait "$s3" || fail "v5 to v3: subscriber failed"
expect "v5 message to a 3.1.1 subscriber" "$(grep '^MSG=' "$work/v3.out")" "MSG=v5/mixed|from5"

# 5. A shared subscription: each message to one member.
for m in a b; do
  stdbuf -oL mosquitto_sub "${P[@]}" -d -t '$share/grp/v5/shared' -W 5 -F 'MSG=%p' >"$work/shared_$m.out" &
  pids+=($!)
  wait_subscribed "$work/shared_$m.out"
done
for i in 1 2 3 4; do mosquitto_pub "${P[@]}" -t v5/shared -m "m$i" -q 1; done
for _ in $(seq 100); do
  n=$(cat "$work"/shared_*.out | grep -c '^MSG=' || true)
  [ "$n" -ge 4 ] && break
  sleep 0.05
done
na=$(grep -c '^MSG=' "$work/shared_a.out" || true)
nb=$(grep -c '^MSG=' "$work/shared_b.out" || true)
expect "shared subscription split" "$na/$nb" "2/2"

echo "interop_v5: $passed passed, 0 failed"
