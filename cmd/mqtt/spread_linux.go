package main

import (
	"context"
	"net"
	"net/netip"
	"syscall"
)

// spreadDialer dials as net.Dialer does, except that a TCP connection to an
// IPv4 loopback address (or to localhost, when it answers on 127.0.0.1)
// leaves from one of the loopback addresses 127.0.0.2 to 127.0.0.251,
// chosen by n. Every connection from one source address to one broker
// needs an ephemeral port of its own, and once much of the range is taken
// Linux searches longer and longer for a free one: with 19,500 connections
// from 127.0.0.1, 70% of the load tool's time went to that search (about
// 480 µs of kernel time per connect), and bench conns measured the tool,
// whichever broker it faced. Spread over 250 addresses, each holds a few
// dozen ports. The broker sees other peer addresses, nothing else. When
// the spread dial fails, the plain one is tried.
func spreadDialer(n int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		if network != "tcp" && network != "tcp4" {
			return d.DialContext(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return d.DialContext(ctx, network, addr)
		}
		sd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%250))}, Control: bindNoPort}
		to := addr
		if host == "localhost" {
			to = net.JoinHostPort("127.0.0.1", port)
		} else if ip, err := netip.ParseAddr(host); err != nil || !ip.Is4() || !ip.IsLoopback() {
			return d.DialContext(ctx, network, addr)
		}
		if nc, err := sd.DialContext(ctx, "tcp4", to); err == nil {
			return nc, nil
		}
		return d.DialContext(ctx, network, addr) // localhost on ::1 only, say
	}
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (Linux 4.2): bind sets
// the source address only and leaves the port to connect, which can reuse
// a port that another destination already uses.
const ipBindAddressNoPort = 24

// bindNoPort is a net.Dialer's Control: the port of a socket bound to a
// chosen source address is picked at connect, not at bind.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
