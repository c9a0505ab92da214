// Package client is an MQTT 3.1, 3.1.1 and 5.0 client.
//
// Dial connects over TCP, TLS, WebSocket (ws and wss) or a unix socket and
// returns once the server has accepted the connection. A Client is safe for
// concurrent use: Publish and PublishAsync pipeline QoS 1 and 2 messages up to
// the in-flight window (Options.MaxInflight, capped by the server's Receive
// Maximum), Subscribe routes matching messages to a Handler, and with
// Options.AutoReconnect a lost connection is re-established with exponential
// backoff, subscriptions are restored when the server kept no session, and
// unacknowledged messages are sent again with the DUP flag.
//
// Outgoing QoS 1 and 2 messages stay in a Store from the moment Publish
// accepts them until the server acknowledges them. The default store is in
// memory; NewFileStore keeps them in a directory, so that a client that is
// restarted with the same store sends whatever it had not yet delivered.
//
// Errors that come from the server carry its reason code: a refused
// connection, a negative acknowledgement or a DISCONNECT from the server can
// be inspected with errors.As(err, &rc) for an rc of type packet.ReasonCode.
//
// Internally each connection has one reader goroutine (a bufio.Reader feeding
// packet.Read) and one writer goroutine that coalesces queued packets in a
// bufio.Writer and flushes when its queue runs empty. Messages are handed to
// handlers by one delivery goroutine per client, in order.
package client
