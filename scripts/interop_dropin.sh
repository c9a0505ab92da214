#!/usr/bin/env bash
# Drop-in check: the same mosquitto.conf, password file (made by Debian's
# mosquitto_passwd) and ACL file served by Debian's mosquitto and by mqttd;
# Debian's mosquitto_pub / mosquitto_sub must get the same answers from both
# (CONNACK codes, SUBACK codes, PUBACK codes, which topics are delivered).
# Then a browser test: an MQTT.js page (npm package mqtt) in headless Debian
# Chromium connects to mqttd over ws://, subscribes, publishes and writes what
# it received into the page, which the script reads with --dump-dom.
#
# Installs what it needs with apt-get and npm, uses free loopback ports and
# fails loudly on the first difference.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
[ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "dropin: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

work=$(mktemp -d)
chmod 755 "$work" # mosquitto started as root reads the files as user mosquitto
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

fail() {
  echo "dropin: FAIL: $*" >&2
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}
pass() { echo "dropin: ok: $*"; passed=$((passed + 1)); }
passed=0

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$work/mqttd" ./cmd/mqttd

# The password file, made by Debian's mosquitto_passwd, and the ACL file.
mosquitto_passwd -c -b "$work/passwd" alice secret
mosquitto_passwd -b "$work/passwd" bob hunter2
cat >"$work/acl" <<'EOF'
# anonymous clients (refused by allow_anonymous false anyway)
topic read public/#

user alice
topic readwrite alice/#
topic read shared/#

user bob
topic write alice/inbox
topic readwrite shared/#
topic deny shared/secret

pattern readwrite clients/%c/#
pattern read users/%u/#
EOF
chmod 644 "$work/passwd" "$work/acl"

# write_conf PORT FILE: the one configuration both brokers run (only the port differs).
write_conf() {
  cat >"$2" <<EOF
# mosquitto.conf used unchanged by mosquitto and mqttd
per_listener_settings false
allow_anonymous false
password_file $work/passwd
acl_file $work/acl
listener $1 127.0.0.1
max_keepalive 300
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
EOF
}

mport=$(free_port)
qport=$(free_port)
write_conf "$mport" "$work/mosquitto.conf"
write_conf "$qport" "$work/mqttd.conf"
"$work/mqttd" --test-config -c "$work/mqttd.conf" >/dev/null || fail "mqttd --test-config refused the mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
"$work/mqttd" -c "$work/mqttd.conf" >"$work/mqttd.log" 2>&1 &
pids+=($!)
for port in "$mport" "$qport"; do
  for _ in $(seq 100); do
    mosquitto_pub -p "$port" -u alice -P secret -t alice/ready -m x 2>/dev/null && break
    sleep 0.1
  done
  mosquitto_pub -p "$port" -u alice -P secret -t alice/ready -m x || fail "broker on port $port did not start"
done

# probe OUT LABEL CMD...: run a client, record its exit code and its output
# with client ids and timestamps taken out.
probe() {
  local out=$1 label=$2 rc=0 text
  shift 2
  text=$(timeout 20 "$@" 2>&1) || rc=$?
  # A v5 reason string after the reason code (mqttd sends them when the client
  # asks for problem information) is not part of the answer compared.
  text=$(printf '%s\n' "$text" | sed -e 's/Client [^ ]* /Client ID /' -e 's/auto-[0-9A-Za-z-]*/ID/g' \
    -e 's/^\(Warning: Publish [0-9]* failed: [^.]*\.\).*/\1/' |
    awk '/^Warning: Publish [0-9]+ failed:/ { print; reason = 1; next }
      reason && !/^(Warning|Error|Connection|Client|Subscribed)/ { reason = 0; next }
      { reason = 0; print }' |
    grep -v 'sending\|^Client ID received CONNACK (0)$' || true)
  printf '%-44s rc=%-3s %s\n' "$label" "$rc" "$(echo "$text" | tr '\n' ' ' | sed 's/ *$//')" >>"$out"
}

# wait_subscribed FILE: mosquitto_sub -d prints "Subscribed" once its SUBACK came.
wait_subscribed() {
  for _ in $(seq 100); do grep -q "Subscribed" "$1" 2>/dev/null && return 0; sleep 0.05; done
  fail "subscriber in $1 never got its SUBACK"
}

# run_checks PORT OUT: the same questions to one broker.
run_checks() {
  local port=$1 out=$2
  local P=(-h 127.0.0.1 -p "$port")
  : >"$out"
  for v in 31 311 5; do
    probe "$out" "v$v anonymous connect" mosquitto_pub "${P[@]}" -V "$v" -i anon1 -t public/x -m x
    probe "$out" "v$v wrong password" mosquitto_pub "${P[@]}" -V "$v" -i c1 -u alice -P wrong -t alice/x -m x
    probe "$out" "v$v unknown user" mosquitto_pub "${P[@]}" -V "$v" -i c1 -u mallory -P x -t alice/x -m x
    probe "$out" "v$v user without password" mosquitto_pub "${P[@]}" -V "$v" -i c1 -u alice -t alice/x -m x
    probe "$out" "v$v good password" mosquitto_pub "${P[@]}" -V "$v" -i c1 -u alice -P secret -t alice/x -m x
  done
  # PUBACK codes (5.0 carries 0x87 for a refused topic).
  probe "$out" "v5 qos1 publish allowed" mosquitto_pub "${P[@]}" -V 5 -q 1 -i bob1 -u bob -P hunter2 -t alice/inbox -m x
  probe "$out" "v5 qos1 publish denied" mosquitto_pub "${P[@]}" -V 5 -q 1 -i bob1 -u bob -P hunter2 -t alice/other -m x
  probe "$out" "v5 qos1 publish deny entry" mosquitto_pub "${P[@]}" -V 5 -q 1 -i bob1 -u bob -P hunter2 -t shared/secret -m x
  probe "$out" "v311 qos1 publish denied" mosquitto_pub "${P[@]}" -V 311 -q 1 -i bob1 -u bob -P hunter2 -t alice/other -m x
  probe "$out" "v5 publish to \$SYS" mosquitto_pub "${P[@]}" -V 5 -q 1 -i bob1 -u bob -P hunter2 -t '$SYS/x' -m x
  # SUBACK codes: Mosquitto grants every filter and filters at delivery.
  for v in 311 5; do
    probe "$out" "v$v suback codes" mosquitto_sub "${P[@]}" -V "$v" -i alice1 -u alice -P secret \
      -t 'alice/#' -t 'bob/#' -t 'shared/#' -t '#' -q 1 -d -E
  done

  # Deliveries: alice listens to everything; denied messages are published
  # first, so any leak shows among the three received.
  for v in 311 5; do
    local sub="$work/sub-$port-$v.raw"
    stdbuf -oL mosquitto_sub "${P[@]}" -V "$v" -i "alice-$v" -u alice -P secret -t '#' -q 1 -v -d -C 3 -W 15 >"$sub" 2>&1 &
    local sp=$!
    wait_subscribed "$sub"
    mosquitto_pub "${P[@]}" -q 1 -i bob1 -u bob -P hunter2 -t alice/other -m "leak: bob may not write alice/other" || true
    mosquitto_pub "${P[@]}" -q 1 -i bob1 -u bob -P hunter2 -t shared/secret -m "leak: deny entry" || true
    mosquitto_pub "${P[@]}" -q 1 -i bob1 -u bob -P hunter2 -t clients/alice-$v/x -m "leak: pattern is for bob1" || true
    mosquitto_pub "${P[@]}" -q 1 -i bob1 -u bob -P hunter2 -t bob/x -m "leak: alice may not read bob/x" || true
    mosquitto_pub "${P[@]}" -q 1 -i bob1 -u bob -P hunter2 -t alice/inbox -m "from bob" || true
    mosquitto_pub "${P[@]}" -q 1 -i bob1 -u bob -P hunter2 -t shared/news -m "shared news" || true
    mosquitto_pub "${P[@]}" -q 1 -i bob1 -u bob -P hunter2 -t clients/bob1/status -m "bob1 own pattern, alice may not read" || true
    mosquitto_pub "${P[@]}" -q 1 -i alice-pub -u alice -P secret -t users/alice/x -m "leak: users/%u is read-only" || true
    mosquitto_pub "${P[@]}" -q 1 -i alice-pub -u alice -P secret -t clients/alice-$v/note -m "leak: the pattern is for client alice-$v, not alice-pub" || true
    mosquitto_pub "${P[@]}" -q 1 -i alice-pub -u alice -P secret -t alice/done -m "done" || true
    wait "$sp" || true
    {
      echo "v$v deliveries to alice:"
      grep -v '^Client\|^Subscribed' "$sub" | sed 's/^/    /'
    } >>"$out"
  done
}

run_checks "$mport" "$work/mosquitto.out"
run_checks "$qport" "$work/mqttd.out"

echo "dropin: Debian mosquitto $(/usr/sbin/mosquitto -h 2>&1 | head -1 | awk '{print $3}') answered:"
sed 's/^/  /' "$work/mosquitto.out"
if ! diff -u "$work/mosquitto.out" "$work/mqttd.out"; then
  fail "mqttd answered differently from mosquitto (diff above: - mosquitto, + mqttd)"
fi
pass "mqttd gave the same $(wc -l <"$work/mqttd.out") answers, line for line"

# Spot checks that the answers are the expected ones, not just equal.
grep -q '^v311 wrong password .*rc=5 .*not authorised' "$work/mqttd.out" || fail "v3.1.1 wrong password is not 'not authorised'"
grep -q '^v5 wrong password .*rc=135' "$work/mqttd.out" || fail "v5 wrong password is not 0x87"
grep -q '^v5 qos1 publish denied .*Publish 1 failed: Not authorized' "$work/mqttd.out" || fail "v5 denied publish did not get PUBACK 0x87"
grep -q '    alice/inbox from bob' "$work/mqttd.out" || fail "allowed message not delivered"
grep -q 'leak' "$work/mqttd.out" && fail "a denied message was delivered"
pass "connect codes, PUBACK codes, allowed and refused topics as expected"

# Connection messages in Mosquitto's wording.
for pat in 'New connection from 127.0.0.1:[0-9]* on port [0-9]*\.' \
  "New client connected from 127.0.0.1:[0-9]* as alice1 (p2, c1, k60, u'alice')\." \
  'Client alice1 disconnected\.' 'Client <unknown> disconnected, not authorised\.'; do
  grep -q "$pat" "$work/mosquitto.log" || fail "mosquitto's own log lacks /$pat/ (test is stale)"
  grep -q "$pat" "$work/mqttd.log" || fail "mqttd log lacks /$pat/"
done
pass "connection messages in Mosquitto's wording"

# ---- Browser test: MQTT.js in headless Chromium over ws:// ----
npmdir="$work/npm"
mkdir -p "$npmdir"
(cd "$npmdir" && npm install --no-audit --no-fund --loglevel=error mqtt@5 >"$work/npm.log" 2>&1) || fail "npm install mqtt failed"
[ -f "$npmdir/node_modules/mqtt/dist/mqtt.min.js" ] || fail "mqtt.min.js missing from the npm package"
cp "$npmdir/node_modules/mqtt/dist/mqtt.min.js" "$work/mqtt.min.js"

wsport=$(free_port)
resport=$(free_port)
cat >"$work/ws.conf" <<EOF
listener $wsport 127.0.0.1
protocol websockets
listener $resport 127.0.0.1
allow_anonymous true
persistence false
EOF
"$work/mqttd" -c "$work/ws.conf" >"$work/mqttd-ws.log" 2>&1 &
pids+=($!)
for port in "$wsport" "$resport"; do
  for _ in $(seq 100); do
    /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
  done
done

cat >"$work/page.html" <<EOF
<!doctype html>
<html><head><meta charset="utf-8"><title>mqttd browser test</title></head>
<body>
<pre id="result">pending</pre>
<script src="mqtt.min.js"></script>
<script>
  const out = document.getElementById('result');
  const client = mqtt.connect('ws://127.0.0.1:$wsport/mqtt', {
    clientId: 'chromium-' + Math.random().toString(16).slice(2), protocolVersion: 4,
    reconnectPeriod: 0, connectTimeout: 5000 });
  client.on('connect', () => {
    client.subscribe('browser/+', { qos: 1 }, (err, granted) => {
      if (err) { out.textContent = 'ERROR subscribe ' + err.message; return; }
      client.publish('browser/hello', 'hello from chromium', { qos: 1 });
    });
  });
  client.on('message', (topic, payload) => {
    if (topic !== 'browser/hello') return;
    out.textContent = 'RECEIVED ' + topic + ' ' + payload.toString();
    // Report to the script's subscriber on the plain MQTT listener.
    client.publish('result/browser', out.textContent, { qos: 1 }, () => client.end());
  });
  client.on('error', (e) => { out.textContent = 'ERROR ' + e.message; });
</script>
</body></html>
EOF
browser=$(command -v chromium)
profile=$(mktemp -d)
# The page reports what it received on result/browser; a real subscriber on
# the TCP listener waits for it (bounded), then Chromium is stopped.
stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$resport" -t result/browser -q 1 -C 1 -W 60 -d >"$work/result.raw" 2>&1 &
subpid=$!
for _ in $(seq 100); do grep -q Subscribed "$work/result.raw" 2>/dev/null && break; sleep 0.05; done
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$profile" \
  "file://$work/page.html" >"$work/chromium.out" 2>"$work/chromium.log" &
chromepid=$!
wait "$subpid" || true
kill -9 "$chromepid" 2>/dev/null || true # headless Chromium may ignore SIGTERM
wait "$chromepid" 2>/dev/null || true
# Its helper processes outlive it and may still be writing the profile.
pkill -9 -f -- "--user-data-dir=$profile" 2>/dev/null || true
for _ in $(seq 50); do rm -rf "$profile" 2>/dev/null && break; sleep 0.1; done
grep -q 'RECEIVED browser/hello hello from chromium' "$work/result.raw" ||
  fail "MQTT.js in Chromium did not get its message back: $(grep -v '^Client' "$work/result.raw" | tail -n 3) $(tail -n 3 "$work/chromium.log")"
grep -q 'New client connected from 127.0.0.1:[0-9]* as chromium-' "$work/mqttd-ws.log" || fail "mqttd did not log the browser client"
pass "MQTT.js $(grep '"version"' "$npmdir/node_modules/mqtt/package.json" | grep -o '[0-9.]*') in headless Chromium: connect, subscribe, publish, receive over ws://"

echo "dropin: $passed passed, 0 failed"
