#!/usr/bin/env bash
# Dynamic security side by side: Debian's mosquitto with its real
# mosquitto_dynamic_security.so, and mqttd with its built-in implementation,
# each started from the same mosquitto.conf and from the same file made by
# `mosquitto_ctrl dynsec init`. The same sequence of mosquitto_ctrl commands
# is sent to both; the raw JSON responses (captured by a subscriber to
# $CONTROL/dynamic-security/v1/response), mosquitto_ctrl's own output, and
# what mosquitto_pub / mosquitto_sub are allowed or refused as the clients
# created must be the same. Prints a PASS/FAIL count; exits non-zero on any
# FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
[ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
command -v mosquitto_ctrl >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "dynsec: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
plugin=$(dpkg -L mosquitto 2>/dev/null | grep '/mosquitto_dynamic_security\.so$' | head -n1 || true)
[ -n "$plugin" ] || plugin=/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
[ -f "$plugin" ] || { echo "dynsec: FAIL: no mosquitto_dynamic_security.so in the mosquitto package" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

passed=0
failed=0
pass() { echo "dynsec: PASS: $*"; passed=$((passed + 1)); }
failc() { echo "dynsec: FAIL: $*" >&2; failed=$((failed + 1)); }
die() {
  echo "dynsec: FAIL: $*" >&2
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$work/mqttd" ./cmd/mqttd

# One init file, copied for each broker (each rewrites its own copy).
mkdir -p "$work/m" "$work/q"
mosquitto_ctrl dynsec init "$work/init.json" admin adminpw >/dev/null
cp "$work/init.json" "$work/m/dynsec.json"
cp "$work/init.json" "$work/q/dynsec.json"
if id mosquitto >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Both brokers started as root run as user mosquitto (and write the file).
  chown -R mosquitto "$work/m" "$work/q"
fi

write_conf() { # PORT DIR FILE
  cat >"$3" <<EOF
per_listener_settings false
allow_anonymous true
listener $1 127.0.0.1
plugin $plugin
plugin_opt_config_file $2/dynsec.json
log_type error
log_type warning
EOF
}
mport=$(free_port)
qport=$(free_port)
write_conf "$mport" "$work/m" "$work/mosquitto.conf"
write_conf "$qport" "$work/q" "$work/mqttd.conf"
"$work/mqttd" --test-config -c "$work/mqttd.conf" >/dev/null || die "mqttd --test-config refused the mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
"$work/mqttd" -c "$work/mqttd.conf" >"$work/mqttd.log" 2>&1 &
pids+=($!)
for port in "$mport" "$qport"; do
  ok=
  for _ in $(seq 100); do
    if mosquitto_ctrl -h 127.0.0.1 -p "$port" -u admin -P adminpw dynsec getDefaultACLAccess >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || die "broker on port $port did not answer mosquitto_ctrl"
done

# The commands, one per line (arguments of `mosquitto_ctrl ... dynsec`).
commands=(
  "createClient alice -p alicepw"
  "createClient alice -p other"
  "createClient bob -c bobid -p bobpw"
  "createClient carol -p carolpw"
  "createGroup devs"
  "createGroup devs"
  "createRole writers"
  "createRole readers"
  "addRoleACL writers publishClientSend app/# allow 5"
  "addRoleACL writers publishClientSend app/secret deny 10"
  "addRoleACL writers subscribePattern app/# allow"
  "addRoleACL writers subscribeLiteral app/secret deny"
  "addRoleACL writers publishClientSend app/# allow"
  "addRoleACL nosuchrole publishClientSend x allow"
  "addRoleACL readers subscribePattern news/+ allow"
  "addRoleACL readers publishClientReceive news/# allow"
  "addRoleACL readers publishClientSend news/# deny 1"
  "addGroupRole devs writers 2"
  "addGroupRole devs writers"
  "addGroupRole devs nosuchrole"
  "addGroupClient devs alice"
  "addGroupClient devs alice"
  "addGroupClient nosuchgroup alice"
  "addClientRole bob writers 3"
  "addClientRole bob readers 7"
  "addClientRole nobody readers"
  "createGroup anon"
  "createRole anonrole"
  "addRoleACL anonrole subscribeLiteral news/today allow"
  "addGroupRole anon anonrole"
  "setAnonymousGroup anon"
  "getAnonymousGroup"
  "setAnonymousGroup nosuchgroup"
  "getClient alice"
  "getClient bob"
  "getClient nobody"
  "listClients"
  "listClients 2"
  "listClients 1 1"
  "getGroup devs"
  "getGroup nosuchgroup"
  "listGroups"
  "getRole writers"
  "getRole readers"
  "getRole nosuchrole"
  "listRoles"
  "getDefaultACLAccess"
  "setDefaultACLAccess publishClientReceive allow"
  "removeRoleACL writers publishClientSend app/nothing"
  "setClientPassword carol newpw"
  "setClientId carol carolid"
  "removeClientRole bob readers"
  "removeGroupClient devs carol"
  "removeGroupRole devs nosuchrole"
  "deleteClient nobody"
  "deleteGroup nosuchgroup"
  "deleteRole nosuchrole"
  "enableClient nobody"
  "disableClient nobody"
  "getClient admin"
  # "raw JSON": published as is by mosquitto_pub as the admin (commands
  # mosquitto_ctrl 2.0.11 has no verb for, and malformed requests).
  'raw not json'
  'raw {"commands":"x"}'
  'raw {"commands":[1,{"command":"frob","correlationData":"c9"},{}]}'
  'raw {"commands":[{"command":"getClient","username":"alice","correlationData":5},{"command":"listClients"}]}'
  'raw {"commands":[{"command":"modifyClient","username":"carol","textname":"Carol","textdescription":"d","roles":[{"rolename":"readers","priority":2},{"rolename":"writers"}],"groups":[{"groupname":"devs","priority":4}]}]}'
  'raw {"commands":[{"command":"getClient","username":"carol","correlationData":"x1"}]}'
  'raw {"commands":[{"command":"modifyClient","username":"carol","roles":[{"rolename":"nosuchrole"}]}]}'
  'raw {"commands":[{"command":"modifyClient","username":"carol","roles":"x"}]}'
  'raw {"commands":[{"command":"modifyGroup","groupname":"devs","textdescription":"the devs","clients":[{"username":"alice"},{"username":"carol","priority":1}]}]}'
  'raw {"commands":[{"command":"getGroup","groupname":"devs"}]}'
  'raw {"commands":[{"command":"modifyRole","rolename":"readers","textname":"R","acls":[{"acltype":"subscribePattern","topic":"news/#","allow":true,"priority":1},{"acltype":"publishClientReceive","topic":"news/#","allow":true}]}]}'
  'raw {"commands":[{"command":"modifyRole","rolename":"nosuchrole"}]}'
  'raw {"commands":[{"command":"getRole","rolename":"readers"}]}'
  'raw {"commands":[{"command":"createRole","rolename":"full","textdescription":"all","acls":[{"acltype":"unsubscribeLiteral","topic":"a/b","allow":true,"priority":2},{"acltype":"unsubscribePattern","topic":"a/#","allow":false},{"acltype":"publishClientSend","topic":"p/+","allow":true,"priority":7}]}]}'
  'raw {"commands":[{"command":"getRole","rolename":"full"}]}'
  'raw {"commands":[{"command":"addRoleACL","rolename":"full","acltype":"subscribePattern","topic":"a/#/b","allow":true}]}'
  'raw {"commands":[{"command":"addRoleACL","rolename":"full","acltype":"nope","topic":"a","allow":true}]}'
  'raw {"commands":[{"command":"addRoleACL","rolename":"full","acltype":"subscribeLiteral"}]}'
  'raw {"commands":[{"command":"createClient","username":"dave","roles":[{"rolename":"nosuchrole"}]}]}'
  'raw {"commands":[{"command":"createClient","username":"dave","groups":[{"groupname":"nosuchgroup"}]}]}'
  'raw {"commands":[{"command":"createClient","username":"dave","password":"d","clientid":"","roles":[{"rolename":"full","priority":1}],"groups":[{"groupname":"devs","priority":3}]}]}'
  'raw {"commands":[{"command":"getClient","username":"dave"}]}'
  'raw {"commands":[{"command":"createGroup","groupname":"g2","roles":[{"rolename":"full"}]},{"command":"getGroup","groupname":"g2"}]}'
  'raw {"commands":[{"command":"setClientPassword","username":"dave","password":""},{"command":"setClientPassword","username":"dave"}]}'
  'raw {"commands":[{"command":"addClientRole","username":"dave","rolename":"full"}]}'
  'raw {"commands":[{"command":"listClients","verbose":true},{"command":"listGroups","verbose":true,"count":2},{"command":"listRoles","verbose":true,"offset":1,"count":0}]}'
  'raw {"commands":[{"command":"setDefaultACLAccess","acls":[{"acltype":"unsubscribe","allow":false},{"acltype":"bogus","allow":true}]},{"command":"getDefaultACLAccess"},{"command":"setDefaultACLAccess"}]}'
  # (Mosquitto 2.0.11 keeps dangling references to a deleted role given by
  # createClient/createGroup "roles": only roles added by addClientRole /
  # addGroupRole are deleted here.)
  'raw {"commands":[{"command":"createRole","rolename":"tmp"},{"command":"addClientRole","username":"carol","rolename":"tmp","priority":9},{"command":"addGroupRole","groupname":"anon","rolename":"tmp"}]}'
  'raw {"commands":[{"command":"deleteRole","rolename":"tmp"},{"command":"getClient","username":"carol"},{"command":"getGroup","groupname":"anon"}]}'
  'raw {"commands":[{"command":"deleteGroup","groupname":"g2"},{"command":"deleteClient","username":"dave"},{"command":"listGroups"},{"command":"getGroup","groupname":"devs"}]}'
  'raw {"commands":[{"command":"setClientId","username":"carol"},{"command":"getClient","username":"carol"}]}'
  'raw {"commands":[{"command":"setClientId","username":"carol","clientid":"carolid"}]}'
)

# sniff PORT OUT: record the raw responses on the response topic.
sniff() {
  mosquitto_sub -h 127.0.0.1 -p "$1" -u admin -P adminpw -i "sniff$1" -t '$CONTROL/dynamic-security/v1/response' >"$2" 2>&1 &
  pids+=($!)
  sniffpid=$!
}

# run_ctrl PORT OUT: the commands against one broker, mosquitto_ctrl's output kept.
run_ctrl() {
  local port=$1 out=$2 c rc text
  : >"$out"
  for c in "${commands[@]}"; do
    rc=0
    if [[ $c == "raw "* ]]; then
      text=$(timeout 20 mosquitto_pub -h 127.0.0.1 -p "$port" -u admin -P adminpw -q 1 \
        -t '$CONTROL/dynamic-security/v1' -m "${c#raw }" 2>&1) || rc=$?
      printf '%-55s rc=%s\n%s\n' "$c" "$rc" "$text" >>"$out"
      continue
    fi
    # shellcheck disable=SC2086
    text=$(timeout 20 mosquitto_ctrl -h 127.0.0.1 -p "$port" -u admin -P adminpw dynsec $c 2>&1) || rc=$?
    printf '%-55s rc=%s\n%s\n' "$c" "$rc" "$text" >>"$out"
  done
}

wait_lines() { # FILE N [TRIES]: N lines in FILE within TRIES × 50 ms (10 s)
  for _ in $(seq "${3:-200}"); do [ "$(wc -l <"$1")" -ge "$2" ] && return 0; sleep 0.05; done
  return 1
}

# until_seen PORT FILE: the probe command again until the sniffer writing
# FILE shows an answer (it may not have subscribed yet when the first goes).
until_seen() {
  for _ in $(seq 20); do
    mosquitto_ctrl -h 127.0.0.1 -p "$1" -u admin -P adminpw dynsec getAnonymousGroup >/dev/null
    wait_lines "$2" 1 20 && return 0
  done
  return 1
}

sniff "$mport" "$work/m.responses"
msniff=$sniffpid
sniff "$qport" "$work/q.responses"
qsniff=$sniffpid
# The sniffers subscribed once they see the answer to a probe command.
until_seen "$mport" "$work/m.responses" || die "no response seen from mosquitto"
until_seen "$qport" "$work/q.responses" || die "no response seen from mqttd"
sleep 0.2 # a probe answered late is counted in the base, not as a command's
mbase=$(wc -l <"$work/m.responses")
qbase=$(wc -l <"$work/q.responses")
if [ "$(head -n 1 "$work/m.responses")" = "$(head -n 1 "$work/q.responses")" ]; then
  pass "response to 'getAnonymousGroup (probe)': $(head -n 1 "$work/m.responses")"
else
  failc "response to 'getAnonymousGroup (probe)' differs:
  mosquitto: $(head -n 1 "$work/m.responses")
  mqttd:     $(head -n 1 "$work/q.responses")"
fi

run_ctrl "$mport" "$work/m.ctrl"
run_ctrl "$qport" "$work/q.ctrl"
n=${#commands[@]}
wait_lines "$work/m.responses" $((mbase + n)) || die "mosquitto: fewer than $n responses"
wait_lines "$work/q.responses" $((qbase + n)) || die "mqttd: fewer than $n responses"

# Compare response by response (the salt and hash are random: none is sent).
i=0
while IFS= read -r mline && IFS= read -r qline <&3; do
  label=${commands[$i]}
  if [ "$mline" = "$qline" ]; then
    pass "response to '$label': $mline"
  else
    failc "response to '$label' differs:
  mosquitto: $mline
  mqttd:     $qline"
  fi
  i=$((i + 1))
done < <(tail -n +$((mbase + 1)) "$work/m.responses") 3< <(tail -n +$((qbase + 1)) "$work/q.responses")
if diff -u "$work/m.ctrl" "$work/q.ctrl" >"$work/ctrl.diff"; then
  pass "mosquitto_ctrl output identical for ${#commands[@]} commands"
else
  failc "mosquitto_ctrl output differs:"
  cat "$work/ctrl.diff" >&2
fi

# ---- allowed / refused as the created clients ----
# probe OUT LABEL CMD...: a client's exit code and output (client ids out).
probe() {
  local out=$1 label=$2 rc=0 text
  shift 2
  text=$(timeout 10 "$@" 2>&1) || rc=$?
  # A v5 reason string after the reason code (mqttd sends them when the
  # client asks for problem information) is not part of the answer compared.
  text=$(printf '%s\n' "$text" | sed -e 's/Client [^ ]* /Client ID /' -e 's/auto-[0-9A-Za-z-]*/ID/g' |
    awk '/^Warning: Publish [0-9]+ failed:/ { print; reason = 1; next }
      reason && !/^(Warning|Error|Connection|Client|Subscribed)/ { reason = 0; next }
      { reason = 0; print }' |
    grep -v 'sending\|Client ID received PUBACK\|Client ID received PUBREC\|Client ID received PUBCOMP' | tr '\n' ' ' | sed 's/ *$//' || true)
  printf '%-50s rc=%-3s %s\n' "$label" "$rc" "$text" >>"$out"
}

# A subscriber that must see a message, then be kicked by disableClient.
outcomes() { # PORT OUT
  local port=$1 out=$2
  local P=(-h 127.0.0.1 -p "$port")
  : >"$out"
  for v in 311 5; do
    probe "$out" "v$v alice publish app/x" mosquitto_pub "${P[@]}" -V "$v" -q 1 -u alice -P alicepw -t app/x -m x -d
    probe "$out" "v$v alice publish app/secret" mosquitto_pub "${P[@]}" -V "$v" -q 1 -u alice -P alicepw -t app/secret -m x -d
    probe "$out" "v$v alice publish other/x" mosquitto_pub "${P[@]}" -V "$v" -q 1 -u alice -P alicepw -t other/x -m x -d
    probe "$out" "v$v alice wrong password" mosquitto_pub "${P[@]}" -V "$v" -u alice -P nope -t app/x -m x
    probe "$out" "v$v unknown user" mosquitto_pub "${P[@]}" -V "$v" -u mallory -P x -t app/x -m x
    probe "$out" "v$v bob wrong client id" mosquitto_pub "${P[@]}" -V "$v" -i notbob -u bob -P bobpw -t app/x -m x
    probe "$out" "v$v bob bound client id" mosquitto_pub "${P[@]}" -V "$v" -q 1 -i bobid -u bob -P bobpw -t app/x -m x -d
    probe "$out" "v$v carol old password" mosquitto_pub "${P[@]}" -V "$v" -i carolid -u carol -P carolpw -t app/x -m x
    probe "$out" "v$v carol new password" mosquitto_pub "${P[@]}" -V "$v" -q 1 -i carolid -u carol -P newpw -t app/x -m x -d
    probe "$out" "v$v admin publish app/x" mosquitto_pub "${P[@]}" -V "$v" -q 1 -u admin -P adminpw -t app/x -m x -d
    probe "$out" "v$v alice subscribe app/#" mosquitto_sub "${P[@]}" -V "$v" -u alice -P alicepw -t 'app/#' -E -d
    probe "$out" "v$v alice subscribe app/secret" mosquitto_sub "${P[@]}" -V "$v" -u alice -P alicepw -t app/secret -E -d
    probe "$out" "v$v alice subscribe other/#" mosquitto_sub "${P[@]}" -V "$v" -u alice -P alicepw -t 'other/#' -E -d
    probe "$out" "v$v anonymous subscribe news/today" mosquitto_sub "${P[@]}" -V "$v" -t news/today -E -d
    probe "$out" "v$v anonymous subscribe news/#" mosquitto_sub "${P[@]}" -V "$v" -t 'news/#' -E -d
    probe "$out" "v$v anonymous publish news/today" mosquitto_pub "${P[@]}" -V "$v" -q 1 -t news/today -m x -d
    probe "$out" "v$v anonymous publish \$CONTROL" mosquitto_pub "${P[@]}" -V "$v" -q 1 -t '$CONTROL/dynamic-security/v1' -m '{"commands":[{"command":"listClients"}]}' -d
  done
  # Delivery: bob (bound id) publishes app/x, alice subscribed to app/# gets it.
  mosquitto_sub "${P[@]}" -u alice -P alicepw -i alicesub -t 'app/#' -C 1 -W 10 >"$work/deliver.$port" 2>&1 &
  local sp=$!
  for _ in $(seq 100); do
    mosquitto_pub "${P[@]}" -i bobid -u bob -P bobpw -t app/x -m delivered 2>/dev/null
    grep -q delivered "$work/deliver.$port" 2>/dev/null && break
    sleep 0.1
  done
  wait "$sp" || true
  printf '%-50s %s\n' "alice receives bob's app/x" "$(cat "$work/deliver.$port")" >>"$out"

  # disableClient kicks a connected alice; she is refused afterwards; enable lets her in.
  mosquitto_sub "${P[@]}" -u alice -P alicepw -i alicekick -t 'app/#' >"$work/kick.$port" 2>&1 &
  local kp=$!
  sleep 0.5 # let the subscriber connect (its exit is what is checked)
  mosquitto_ctrl "${P[@]}" -u admin -P adminpw dynsec disableClient alice >/dev/null
  local krc=0 gone=
  for _ in $(seq 100); do
    if ! kill -0 "$kp" 2>/dev/null; then gone=1; break; fi
    sleep 0.1
  done
  wait "$kp" 2>/dev/null || krc=$?
  printf '%-50s %s\n' "disableClient kicks alice" "${gone:+disconnected}" >>"$out"
  probe "$out" "alice while disabled" mosquitto_pub "${P[@]}" -u alice -P alicepw -t app/x -m x
  mosquitto_ctrl "${P[@]}" -u admin -P adminpw dynsec enableClient alice >/dev/null
  probe "$out" "alice enabled again" mosquitto_pub "${P[@]}" -q 1 -u alice -P alicepw -t app/x -m x -d
  mosquitto_ctrl "${P[@]}" -u admin -P adminpw dynsec deleteClient bob >/dev/null
  probe "$out" "bob after deleteClient" mosquitto_pub "${P[@]}" -i bobid -u bob -P bobpw -t app/x -m x
  mosquitto_ctrl "${P[@]}" -u admin -P adminpw dynsec removeRoleACL writers publishClientSend 'app/#' >/dev/null
  probe "$out" "alice after removeRoleACL app/#" mosquitto_pub "${P[@]}" -V 5 -q 1 -u alice -P alicepw -t app/x -m x -d
}
outcomes "$mport" "$work/m.outcomes"
outcomes "$qport" "$work/q.outcomes"
while IFS= read -r mline && IFS= read -r qline <&3; do
  if [ "$mline" = "$qline" ]; then
    pass "outcome: $mline"
  else
    failc "outcome differs:
  mosquitto: $mline
  mqttd:     $qline"
  fi
done <"$work/m.outcomes" 3<"$work/q.outcomes"

# The file mqttd wrote must load in Debian's mosquitto and vice versa
# (same clients, groups, roles: compared through getClient/listRoles).
kill "$msniff" "$qsniff" 2>/dev/null || true
python3 - "$work/m/dynsec.json" "$work/q/dynsec.json" <<'EOF' && pass "saved files hold the same clients, groups, roles and defaults" || failc "saved files differ"
import json, sys
def norm(p):
    d = json.load(open(p))
    for c in d.get("clients", []):
        for k in ("password", "salt"):
            c.pop(k, None)
        c.pop("textName", None)
        c.pop("textname", None)
    for r in d.get("roles", []):
        r["acls"] = sorted(r.get("acls", []), key=lambda a: (a["acltype"], a["topic"]))
    return d
a, b = norm(sys.argv[1]), norm(sys.argv[2])
if a != b:
    print(json.dumps(a, sort_keys=True, indent=1), file=sys.stderr)
    print(json.dumps(b, sort_keys=True, indent=1), file=sys.stderr)
    sys.exit(1)
EOF
perm=$(stat -c %a "$work/q/dynsec.json")
[ "$perm" = 600 ] && pass "mqttd's saved file is mode 0600" || failc "mqttd's saved file is mode $perm, want 600"

echo "dynsec: $passed PASS, $failed FAIL"
[ "$failed" = 0 ]
