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
// Flow control: PublishAsync blocks only while the in-flight window is full
// (and always gives up when its context ends, connected or not). The writer
// sends no more unacknowledged QoS 1/2 PUBLISHes than the server's Receive
// Maximum [MQTT-3.3.4-7], also when it re-sends stored and in-flight
// messages after Dial or a reconnection. Messages of one QoS level keep
// their order; a QoS 0 message may overtake QoS 1/2 messages waiting for
// the window, and the other way round. Keep alive sends PINGREQ when nothing
// was written for 3/4 of the keep alive or nothing received for a whole
// one, so a link that swallows everything is noticed even while publishing.
//
// Memory: received messages wait for their handler in a queue that does not
// block the network reader; QoS 1/2 messages in it are bounded by our
// Receive Maximum (the server may not send more unacknowledged), QoS 0
// messages by Options.MaxQueuedQoS0 and MaxQueuedBytes, beyond which new
// ones are dropped and counted (Client.Dropped). A slow handler delays the
// acknowledgements and so slows the server down.
//
// Beyond publish and subscribe: several server URLs (Options.Servers), a
// first connection retried like reconnections (Options.ConnectRetry), a
// custom dialer and WebSocket headers and proxy, credentials fetched on
// each connection (Options.Credentials), the MQTT 5 AUTH exchange
// (Options.Auth, NewSCRAMSHA256, Client.Reauthenticate), manual
// acknowledgement (Options.ManualAck, Client.Ack), WaitDrained and
// OnResend / OnStoreResult for the store, MQTT 5 request/response
// (Client.NewRequester, Client.Respond), and a packet trace at debug level
// on Options.Logger.
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
// packet.Read), one writer goroutine that coalesces packets in a
// bufio.Writer and flushes when it has nothing more to write, and one
// keep-alive goroutine. Messages are handed to
// handlers by one delivery goroutine per client, in order.
package client
