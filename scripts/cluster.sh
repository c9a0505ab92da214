#!/usr/bin/env bash
# cluster.sh up|down|status: a 3-node mqttd cluster on loopback for trying it.
#
#   scripts/cluster.sh up       build ./cmd/mqttd, write 3 configs, start the nodes
#   scripts/cluster.sh status   which nodes run, their MQTT ports
#   scripts/cluster.sh down     stop the nodes (SIGTERM, then wait)
#
# MQTT on 127.0.0.1:${MQTT_BASE}+1..3 (default 18831-18833), links on
# 127.0.0.1:${LINK_BASE}+1..3 (default 17501-17503). Everything (binary,
# configs, data, logs, pids) is under $MQTTD_CLUSTER_DIR (default
# ${TMPDIR:-/tmp}/mqttd-cluster); `down` leaves it for inspection, `down --clean`
# removes it.
set -euo pipefail

dir=${MQTTD_CLUSTER_DIR:-${TMPDIR:-/tmp}/mqttd-cluster}
mqtt_base=${MQTT_BASE:-18830}
link_base=${LINK_BASE:-17500}
root=$(cd "$(dirname "$0")/.." && pwd)

pidfile() { echo "$dir/n$1.pid"; }

# connack PORT: an MQTT CONNECT (3.1.1, clean session, empty client id) to
# 127.0.0.1:PORT is answered by a CONNACK within a second. A TCP connect is
# not enough: a node's port accepts connections before the node serves
# them, which it does once it has joined the cluster.
connack() {
	local reply
	reply=$(
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf '\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00' >&3
		timeout 1 head -c 2 <&3 | od -An -tx1
	) 2>/dev/null || return 1
	[[ $reply == *"20 02"* ]]
}

running() { # node number
	local f
	f=$(pidfile "$1")
	[[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

up() {
	mkdir -p "$dir"
	(cd "$root" && go build -o "$dir/mqttd" ./cmd/mqttd)
	for i in 1 2 3; do
		if running "$i"; then
			echo "n$i already running (pid $(cat "$(pidfile "$i")"))"
			continue
		fi
		local conf="$dir/n$i.conf"
		{
			echo "listener $((mqtt_base + i)) 127.0.0.1"
			echo "allow_anonymous true"
			echo "persistence true"
			echo "persistence_location $dir/n$i"
			echo "log_dest file $dir/n$i.log"
			echo "cluster_name local"
			echo "cluster_node n$i"
			echo "cluster_listen 127.0.0.1:$((link_base + i))"
			for j in 1 2 3; do
				[[ $j == "$i" ]] || echo "cluster_peer 127.0.0.1:$((link_base + j))"
			done
		} >"$conf"
		mkdir -p "$dir/n$i"
		"$dir/mqttd" -c "$conf" >>"$dir/n$i.out" 2>&1 &
		echo $! >"$(pidfile "$i")"
		echo "n$i: pid $!, mqtt://127.0.0.1:$((mqtt_base + i)), link 127.0.0.1:$((link_base + i))"
	done
	# The nodes wait for each other (JetStream needs a majority): report
	# when every MQTT port answers a CONNECT, within a minute.
	local end=$((SECONDS + 60))
	for i in 1 2 3; do
		local ok=
		while ((SECONDS < end)); do
			if connack "$((mqtt_base + i))"; then
				ok=1
				break
			fi
			running "$i" || break
			sleep 0.1
		done
		if [[ -z $ok ]]; then
			echo "n$i did not start: see $dir/n$i.out and $dir/n$i.log" >&2
			exit 1
		fi
	done
	echo "cluster up: try  mosquitto_sub -p $((mqtt_base + 1)) -t 'x/#' -v  and  mosquitto_pub -p $((mqtt_base + 3)) -t x/y -m hi"
}

down() {
	for i in 1 2 3; do
		if running "$i"; then
			kill "$(cat "$(pidfile "$i")")"
		fi
	done
	for i in 1 2 3; do
		for _ in $(seq 200); do
			running "$i" || break
			sleep 0.1
		done
		if running "$i"; then
			echo "n$i (pid $(cat "$(pidfile "$i")")) still running after 20s" >&2
		else
			rm -f "$(pidfile "$i")"
		fi
	done
	if [[ ${1:-} == --clean ]]; then
		rm -rf "$dir"
	fi
}

status() {
	for i in 1 2 3; do
		if running "$i"; then
			echo "n$i: running, pid $(cat "$(pidfile "$i")"), mqtt://127.0.0.1:$((mqtt_base + i))"
		else
			echo "n$i: stopped"
		fi
	done
}

case ${1:-} in
up) up ;;
down) down "${2:-}" ;;
status) status ;;
*)
	echo "usage: $0 up|down [--clean]|status" >&2
	exit 2
	;;
esac
