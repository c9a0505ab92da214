#!/usr/bin/env bash
# Dashboard check: mqttd with an admin listener (bearer token), a real MQTT
# client (Debian's mosquitto_sub) and a publisher, and the dashboard driven in
# headless Debian Chromium through chromedriver (WebDriver over HTTP, spoken
# by a small Python script with the standard library only):
#   - the page loads and the token is accepted (overview shows the version),
#   - the clients page lists the connected client,
#   - the overview's rate chart moves while the script publishes,
#   - the live topic tree shows the published topics,
#   - the Kick button disconnects the client (DISCONNECT 0x98 in mqttd's log).
# Screenshots go to ./artifacts/dashboard-*.png. Prints PASS/FAIL counts and
# exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
command -v mosquitto_pub >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "dashboard: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

work=$(mktemp -d)
mkdir -p artifacts
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$work/mqttd" ./cmd/mqttd
mport=$(free_port)
aport=$(free_port)
dport=$(free_port)
echo "dash-token-$RANDOM$RANDOM" >"$work/token"
chmod 600 "$work/token" # read before mqttd drops root (if it runs as root)
cat >"$work/mqttd.conf" <<CONF
listener $mport 127.0.0.1
allow_anonymous true
persistence false
admin_listener $aport
admin_token_file $work/token
CONF
"$work/mqttd" -c "$work/mqttd.conf" >"$work/mqttd.log" 2>&1 &
pids+=($!)
up=
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$aport/" && { up=1; break; }
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "dashboard: FAIL: mqttd's admin listener did not come up" >&2
  tail -n 20 "$work/mqttd.log" >&2
  echo "dashboard: 0 passed, 1 failed"
  exit 1
fi

# The client the dashboard must list and kick (MQTT 5, so that it is told
# why: DISCONNECT 0x98).
mosquitto_sub -h 127.0.0.1 -p "$mport" -V 5 -i dash-client -t 'load/#' >"$work/sub.out" 2>&1 &
pids+=($!)
# A steady publisher: 20 messages a second on ten topics.
(
  i=0
  while :; do
    for t in $(seq 0 9); do echo "value $i"; done | mosquitto_pub -h 127.0.0.1 -p "$mport" -i dash-pub -t "load/t$((i % 10))" -l
    i=$((i + 1))
    sleep 0.5
  done
) >/dev/null 2>&1 &
pubpid=$!
pids+=($pubpid)

chromedriver --port="$dport" >"$work/chromedriver.log" 2>&1 &
pids+=($!)

set +e
DRIVER="http://127.0.0.1:$dport" ADMIN="http://127.0.0.1:$aport" TOKEN="$(cat "$work/token")" \
  LOG="$work/mqttd.log" PROFILE="$work/profile" /usr/bin/python3 - <<'PY'
import base64, json, os, sys, time, urllib.request

driver, admin, token = os.environ["DRIVER"], os.environ["ADMIN"], os.environ["TOKEN"]
passed = failed = 0

def req(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(driver + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(r, timeout=60) as res:
        return json.load(res)["value"]

def ok(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("dashboard: PASS: " + what)
    else:
        failed += 1
        print("dashboard: FAIL: " + what)
    return cond

for _ in range(100):
    try:
        req("GET", "/status"); break
    except Exception:
        time.sleep(0.1)

sess = req("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--user-data-dir=" + os.environ["PROFILE"]]}}}})
sid = sess["sessionId"]

def js(script, *args):
    return req("POST", f"/session/{sid}/execute/sync", {"script": script, "args": list(args)})

def wait(script, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = js(script)
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.25)
    return None

def shot(name):
    png = base64.b64decode(req("GET", f"/session/{sid}/screenshot"))
    with open(f"artifacts/dashboard-{name}.png", "wb") as f:
        f.write(png)

def go(hash_):
    js("location.hash = arguments[0]", hash_)

try:
  try:
      req("POST", f"/session/{sid}/url", {"url": admin + "/#overview"})
      # Without the token the API refuses: the page says so.
      ok(wait("return document.querySelector('#error').hidden === false && document.querySelector('#error').textContent", 10),
         "without the token the dashboard shows the API's refusal")
      js("document.querySelector('#token').value = arguments[0];"
         "document.querySelector('#tokenform').requestSubmit()", token)
      ok(wait("return document.querySelector('#ov-broker').textContent.includes('mqttd version')"),
         "the overview loads with the bearer token (version, listeners shown)")
      go("#clients")
      ok(wait("return !!document.querySelector('tr[data-client=\"dash-client\"]')"), "the clients page lists dash-client")
      shot("clients")
      go("#overview")
      first = wait("var p = document.querySelector('#chart-rates polyline.in'); return p && p.getAttribute('points') !== null && document.querySelector('#chart-rates').dataset.updated && p.getAttribute('points')")
      # Samples are taken every 5 s: wait for the chart to get a new point
      # with a positive inbound rate.
      moved = wait("var p = document.querySelector('#chart-rates polyline.in');"
                   "return p && p.getAttribute('points') !== arguments[0] && Number(p.dataset.n) >= 2"
                   " && parseFloat(document.querySelector('#ov-in').textContent) > 0".replace("arguments[0]", json.dumps(first or "")), 30)
      ok(bool(moved), "the message-rate chart moves while messages are published (rate in > 0)")
      shot("overview")
      go("#topics")
      ok(wait("return !!document.querySelector('tr[data-topic=\"load\"]')"), "the live topic tree shows the level 'load'")
      js("document.querySelector('tr[data-topic=\"load\"] a.level').click()")
      ok(wait("var r = document.querySelector('tr[data-topic=\"load/t1\"]'); return r && /value \\d+/.test(r.textContent) && r.cells[1].textContent !== '0'"),
         "below 'load' the topics show message counts and last values")
      shot("topics")
      go("#clients")
      wait("return !!document.querySelector('button[data-kick=\"dash-client\"]')")
      js("window.confirm = function () { return true }; document.querySelector('button[data-kick=\"dash-client\"]').click()")
      def kicked():
          with open(os.environ["LOG"]) as f:
              return "client disconnected by the server client=dash-client" in f.read()
      end = time.time() + 10
      while time.time() < end and not kicked():
          time.sleep(0.2)
      ok(kicked(), "Kick disconnects dash-client (mqttd logs the administrative disconnect)")
      shot("kicked")
  except Exception as e:
    ok(False, "the browser session failed: %r" % (e,))
finally:
    try:
        req("DELETE", f"/session/{sid}")
    except Exception:
        pass
print(f"dashboard: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "--- mqttd.log" >&2; tail -n 20 "$work/mqttd.log" >&2
  echo "--- chromedriver.log" >&2; tail -n 10 "$work/chromedriver.log" >&2
fi
exit $rc
