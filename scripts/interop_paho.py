"""Python paho-mqtt against mqttd: MQTT 3.1 and 3.1.1, QoS 0/1/2, retained,
persistent session. Exits non-zero with a message on the first mismatch.
Works with paho-mqtt 1.x (Debian bookworm) and 2.x."""
import sys
import threading
import time

import paho.mqtt.client as mqtt

HOST, PORT = sys.argv[1], int(sys.argv[2])


def new_client(client_id, protocol, clean=True):
    kwargs = dict(client_id=client_id, clean_session=clean, protocol=protocol)
    if hasattr(mqtt, "CallbackAPIVersion"):
        kwargs["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION1
    c = mqtt.Client(**kwargs)
    c.received = []
    c.cond = threading.Condition()
    c.connack = None

    def on_connect(client, userdata, flags, rc):
        with client.cond:
            client.connack = (flags.get("session present", 0), rc)
            client.cond.notify_all()

    def on_message(client, userdata, msg):
        with client.cond:
            client.received.append((msg.topic, msg.payload.decode(), msg.qos, msg.retain))
            client.cond.notify_all()

    def on_subscribe(client, userdata, mid, granted_qos):
        with client.cond:
            client.subacks += 1
            client.cond.notify_all()

    c.subacks = 0
    c.on_connect = on_connect
    c.on_message = on_message
    c.on_subscribe = on_subscribe
    return c


def wait_for(c, pred, what, timeout=5.0):
    deadline = time.time() + timeout
    with c.cond:
        while not pred():
            left = deadline - time.time()
            if left <= 0:
                sys.exit("paho: timed out waiting for %s (received %r)" % (what, c.received))
            c.cond.wait(left)


def connect(c):
    c.connect(HOST, PORT, keepalive=30)
    c.loop_start()
    wait_for(c, lambda: c.connack is not None, "CONNACK")
    if c.connack[1] != 0:
        sys.exit("paho: CONNACK %r" % (c.connack,))
    return c.connack


def check(cond, msg):
    if not cond:
        sys.exit("paho: " + msg)


for name, proto in (("3.1", mqtt.MQTTv31), ("3.1.1", mqtt.MQTTv311)):
    tag = name.replace(".", "")
    sub = new_client("py-sub-" + tag, proto)
    connect(sub)
    res, _ = sub.subscribe([("py%s/+/data" % tag, 2), ("py%s/retained" % tag, 1)])
    check(res == 0, "subscribe failed")
    wait_for(sub, lambda: sub.subacks >= 1, "SUBACK")
    pub = new_client("py-pub-" + tag, proto)
    connect(pub)
    for q in (0, 1, 2):
        info = pub.publish("py%s/q%d/data" % (tag, q), "qos%d" % q, qos=q)
        info.wait_for_publish()
    wait_for(sub, lambda: len(sub.received) >= 3, "QoS 0/1/2 messages (%s)" % name)
    got = sorted(sub.received)
    want = [("py%s/q%d/data" % (tag, q), "qos%d" % q, q, False) for q in (0, 1, 2)]
    check(got == want, "MQTT %s messages: got %r want %r" % (name, got, want))

    # Retained: published before subscribing, delivered with the retain flag.
    pub.publish("py%s/retained" % tag, "r", qos=1, retain=True).wait_for_publish()
    late = new_client("py-late-" + tag, proto)
    connect(late)
    late.subscribe("py%s/retained" % tag, 1)
    wait_for(late, lambda: len(late.received) >= 1, "retained message (%s)" % name)
    check(late.received[0] == ("py%s/retained" % tag, "r", 1, True), "retained: %r" % late.received)

    # Persistent session: subscribe, go away, miss messages, come back.
    p = new_client("py-persist-" + tag, proto, clean=False)
    connect(p)
    p.subscribe("py%s/persist/#" % tag, 1)
    wait_for(p, lambda: p.subacks >= 1, "SUBACK")
    p.disconnect()
    p.loop_stop()
    for i in range(3):
        pub.publish("py%s/persist/%d" % (tag, i), str(i), qos=1).wait_for_publish()
    p2 = new_client("py-persist-" + tag, proto, clean=False)
    flags = connect(p2)
    if proto == mqtt.MQTTv311:
        check(flags[0] == 1, "session present flag not set on resume: %r" % (flags,))
    wait_for(p2, lambda: len(p2.received) >= 3, "queued messages (%s)" % name)
    check([m[1] for m in p2.received] == ["0", "1", "2"], "persistent: %r" % p2.received)
    for c in (sub, pub, late, p2):
        c.disconnect()
        c.loop_stop()
    print("paho: MQTT %s ok" % name)
