#!/usr/bin/env python3
"""Five rounds of four sockets that each declare a 256 MiB packet and send
(almost) nothing, printing the broker's RSS after each round.

  scripts/preauth_rss.py PID PORT          # CONNECT header 10 FF FF FF 7F
  scripts/preauth_rss.py PID PORT post     # CONNECT, then PUBLISH header 30 FF FF FF 7F

PID is the broker's process id (any broker: mqttd, mosquitto), PORT its
plain MQTT port on 127.0.0.1. The post variant needs anonymous access and,
to reach the body reader at all, a packet limit above 256 MiB
(max_packet_size 268435460 on mqttd).
"""
import socket
import sys
import time


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return -1


def connect_packet(client_id):
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(body)]) + body


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    post = len(sys.argv) > 3 and sys.argv[3] == "post"
    print("start", rss_mb(pid), "MB")
    for r in range(5):
        socks = []
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", port))
            if post:
                s.sendall(connect_packet(b"rss-%d-%d" % (r, i)))
                s.recv(4)
                s.sendall(b"\x30\xff\xff\xff\x7f\x00\x01t" + b"\0" * 64)
            else:
                s.sendall(b"\x10\xff\xff\xff\x7f")
            socks.append(s)
        time.sleep(0.5)
        for s in socks:
            s.close()
        time.sleep(0.3)
        print("round", r + 1, rss_mb(pid), "MB")


if __name__ == "__main__":
    main()
