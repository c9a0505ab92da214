package main

import "strings"

const v311Default = "mqttv31, mqttv311 (default) or mqttv5"

// connHelp is the help of the connection flags; VERSIONS is replaced by the -V choices.
func connHelp(version string) string {
	return strings.Replace(connHelpText, "VERSIONS", version, 1)
}

const connHelpText = ` -h : host to connect to (default localhost).          -p : port (default 1883, 8883 with TLS).
 -L : URL mqtt(s)://[user[:password]@]host[:port]/topic, also ws:// and wss:// (path: --ws-path, default /mqtt).
 --unix : connect to a unix socket.        -V : VERSIONS.
 -u / -P : username / password.            -i : client id.   -I : client id prefix (the pid is appended).
 -k : keep alive seconds (default 60).     -c : persistent session.   -x : v5 session expiry (-1 = never).
 -d : debug lines.   --quiet : no error messages.   -D command identifier value : MQTT v5 property.
 --will-topic, --will-payload, --will-qos, --will-retain : the client's will.
 --cafile, --capath, --cert, --key, --insecure, --tls-version tlsv1.3|tlsv1.2|tlsv1.1, --tls-alpn, --tls-use-os-certs
`

var helpText = map[string]string{
	"pub": `mqtt pub publishes messages, as mosquitto_pub.

Usage: mqtt pub -t topic {-m message | -f file | -s | -l | -n} [-q qos] [-r] [--repeat N] [--repeat-delay secs] [options]

 -t : topic.   -m : message.   -f : file as the message.   -s : stdin as one message.
 -l : one message per line of stdin.   -n : zero-length message.   -q : QoS 0, 1 or 2.   -r : retain.
 -M : maximum in-flight QoS 1/2 messages.
` + connHelp(v311Default),
	"sub": `mqtt sub subscribes and prints messages, as mosquitto_sub.

Usage: mqtt sub -t topic [-t topic ...] [-q qos] [-v] [-N] [-F format] [-C count] [-W secs] [options]

 -t : filter to subscribe to (repeatable).   -T : filter to leave out (repeatable).   -U : unsubscribe.
 -v : print "topic payload".   -N : no newline after each message.   -F : output format (%t %p %j ... @H \n ...).
 -C : exit after count messages.   -W : exit with status 27 after secs.   -R : skip retained messages.
 -E : exit once subscribed.   --retained-only, --remove-retained, --retain-as-published.
` + connHelp(v311Default),
	"rr": `mqtt rr sends a request and prints the response, as mosquitto_rr.

Usage: mqtt rr -t topic -e response-topic {-m message | -f file | -s | -n} [-W secs] [-v] [-F format] [options]

The request carries the response topic as its Response Topic property, so MQTT v5 is the default.
` + connHelp("mqttv31, mqttv311 or mqttv5 (default)"),
	"bench": `mqtt bench drives load scenarios against any MQTT broker.

Usage: mqtt bench {fanin|fanout|pairs|shared|conns|latency} [options]

 fanin   : --clients P publishers to distinct topics, one wildcard subscriber (default 10).
 fanout  : 1 publisher, --clients S subscribers (default 10).
 pairs   : --clients N publisher/subscriber pairs (default 10).
 shared  : --publishers P (default 4) publishers, --clients S members of one $share group (default 4).
 conns   : --clients C idle connections (default 1000), --concurrency of them connecting at once (default 100):
           connect rate; with --pid PID, broker memory per connection. --subscribe: each connection then
           subscribes to a topic of its own at --qos (the connect rate counts CONNECT and SUBSCRIBE).
           On Linux, connections to a loopback broker leave from 127.0.0.2-127.0.0.251 in turn, so that
           finding ephemeral ports does not bound the rate.
 latency : --clients N pairs (default 1) at a fixed --rate (default 1000 msg/s): latency percentiles.

 --duration : how long to publish (default 5s).   --qos : 0, 1 (default) or 2.   --size : payload bytes (>= 16, default 64).
 --window : in-flight QoS 1/2 messages per publisher (default 64).   --rate : total msgs/s (0 = unlimited).
 --drain : how long to wait for stragglers (default 5s).   --json : one JSON object as the last line.
 --max-outstanding : publishers pause while this many of the messages a subscriber (or shared group) should
   get are published but not yet received (default 500), so the run measures the rate the broker sustains
   without overrunning its queues (Mosquitto's default max_queued_messages is 1000).
 --open-loop : publish as fast as the window allows, whatever is received (the overload behaviour).
 --sub-url URL : the subscribers connect to URL (mqtt://host:port, mqtts://, ws://, wss://), the publishers to
   -h/-p/-L: with two nodes of a cluster, the run measures the hop between them. It starts once what each
   publisher sends reaches its subscribers (a cluster learns of a subscription soon after the SUBACK).
 Exit status 3 when QoS 1/2 messages were lost.
` + connHelp(v311Default),
}
