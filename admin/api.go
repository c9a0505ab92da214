package admin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

const (
	defaultLimit = 100
	maxLimit     = 1000
	maxBody      = 1 << 20 // POST publish body
)

func (s *Server) routesInit() {
	s.mux = http.NewServeMux()
	handle := func(method, path string, h http.HandlerFunc) {
		s.routes = append(s.routes, method+" "+path)
		s.mux.HandleFunc(method+" /api/v1"+path, h)
	}
	handle("GET", "/broker", s.getBroker)
	handle("GET", "/metrics", s.getMetrics)
	handle("GET", "/samples", s.getSamples)
	handle("GET", "/clients", s.getClients)
	handle("GET", "/clients/{id}", s.getClient)
	handle("DELETE", "/clients/{id}", s.kick)
	handle("POST", "/clients/{id}/kick", s.kick)
	handle("GET", "/subscriptions", s.getSubscriptions)
	handle("GET", "/topics", s.getTopics)
	handle("GET", "/retained", s.getRetained)
	handle("GET", "/retained/{topic...}", s.getRetainedOne)
	handle("DELETE", "/retained/{topic...}", s.deleteRetained)
	handle("POST", "/publish", s.publish)
	handle("GET", "/stream/topics", s.streamTopics)
	handle("GET", "/stream/watch", s.streamWatch)
	handle("GET", "/openapi.json", s.getOpenAPI)
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
}

// Routes returns "METHOD /path" of every API route, paths relative to
// /api/v1 with Go's pattern syntax ({topic...}).
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// paging reads limit, cursor and offset.
type paging struct {
	limit  int
	cursor string // decoded
	offset int
}

func readPaging(r *http.Request) (paging, error) {
	q := r.URL.Query()
	p := paging{limit: defaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return p, errors.New("limit must be 1 to " + strconv.Itoa(maxLimit))
		}
		p.limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return p, errors.New("offset must be a number >= 0")
		}
		p.offset = n
	}
	if v := q.Get("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			return p, errors.New("cursor is not one this API gave")
		}
		p.cursor = string(b)
		if p.offset != 0 {
			return p, errors.New("give cursor or offset, not both")
		}
	}
	return p, nil
}

func encCursor(c string) string {
	if c == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(c))
}

type listenerInfo struct {
	Address string `json:"address"`
	Network string `json:"network"`
}

func (s *Server) getBroker(w http.ResponseWriter, r *http.Request) {
	st := s.b.Stats()
	started := s.b.StartTime()
	var ls []listenerInfo
	for _, a := range s.b.Addrs() {
		ls = append(ls, listenerInfo{a.String(), a.Network()})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"version":         s.cfg.Version,
		"go_version":      runtime.Version(),
		"started":         started.UTC(),
		"uptime_seconds":  int64(time.Since(started).Seconds()),
		"listeners":       ls,
		"sessions":        s.b.SessionCount(),
		"clients":         st.ClientsConnected,
		"clients_offline": st.ClientsDisconnected,
		"subscriptions":   st.Subscriptions,
		"retained":        st.Retained,
		"publish_in":      st.PublishReceived,
		"publish_out":     st.PublishSent,
		"dropped":         st.PublishDropped,
	})
}

func (s *Server) getMetrics(w http.ResponseWriter, r *http.Request) {
	st := s.b.Stats()
	writeJSON(w, http.StatusOK, map[string]any{
		"time":                  time.Now().UTC(),
		"uptime_seconds":        int64(time.Since(s.b.StartTime()).Seconds()),
		"clients_connected":     st.ClientsConnected,
		"clients_disconnected":  st.ClientsDisconnected,
		"clients_maximum":       st.ClientsMaximum,
		"clients_expired":       st.ClientsExpired,
		"sockets_accepted":      st.SocketsAccepted,
		"packets_received":      st.MessagesReceived,
		"packets_sent":          st.MessagesSent,
		"bytes_received":        st.BytesReceived,
		"bytes_sent":            st.BytesSent,
		"publish_received":      st.PublishReceived,
		"publish_sent":          st.PublishSent,
		"publish_bytes_recv":    st.PublishBytesRecv,
		"publish_bytes_sent":    st.PublishBytesSent,
		"publish_received_qos":  st.PublishReceivedQoS,
		"publish_sent_qos":      st.PublishSentQoS,
		"dropped":               st.PublishDropped,
		"dropped_queue_full":    st.DroppedQueueFull,
		"dropped_backlog":       st.DroppedBacklog,
		"dropped_too_large":     st.DroppedTooLarge,
		"dropped_memory":        st.DroppedMemory,
		"store_writes":          st.StoreWrites,
		"store_write_seconds":   st.StoreWriteSeconds,
		"subscriptions":         st.Subscriptions,
		"retained":              st.Retained,
		"inflight":              st.Inflight,
		"queued":                st.Queued,
		"auth_failures":         st.AuthFailures,
		"disconnects_by_reason": s.b.DisconnectsByReason(),
	})
}

func (s *Server) getSamples(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since must be an RFC 3339 time")
			return
		}
		since = t
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"interval_seconds": s.cfg.SampleInterval.Seconds(),
		"samples":          s.samples.since(since),
	})
}

type clientJSON struct {
	ID            string `json:"id"`
	Username      string `json:"username"`
	Connected     bool   `json:"connected"`
	Remote        string `json:"remote"`
	Listener      string `json:"listener"`
	Protocol      string `json:"protocol"` // "3.1", "3.1.1", "5.0"; "" offline
	Persistent    bool   `json:"persistent"`
	Subscriptions int    `json:"subscriptions"`
	Inflight      int    `json:"inflight"`
	Queued        int    `json:"queued"`
}

func protocolName(v byte) string {
	switch packet.Version(v) {
	case packet.V31:
		return "3.1"
	case packet.V311:
		return "3.1.1"
	case packet.V5:
		return "5.0"
	}
	return ""
}

func toClientJSON(c broker.ClientSummary) clientJSON {
	return clientJSON{c.ID, c.Username, c.Connected, c.Remote, c.Listener, protocolName(c.Protocol),
		c.Persistent, c.Subscriptions, c.Inflight, c.Queued}
}

func (s *Server) getClients(w http.ResponseWriter, r *http.Request) {
	p, err := readPaging(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	f := broker.ClientFilter{ID: q.Get("id"), Username: q.Get("user"), Address: q.Get("address"),
		ConnectedOnly: q.Get("connected") == "true"}
	page, next := s.b.ClientsPage(f, p.cursor, p.offset, p.limit)
	items := make([]clientJSON, len(page))
	for i, c := range page {
		items[i] = toClientJSON(c)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "next_cursor": encCursor(next),
		"sessions": s.b.SessionCount()})
}

type subJSON struct {
	ClientID          string `json:"client_id"`
	Filter            string `json:"filter"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local"`
	RetainAsPublished bool   `json:"retain_as_published"`
	RetainHandling    byte   `json:"retain_handling"`
	SubscriptionID    uint32 `json:"subscription_id,omitempty"`
}

func toSubJSON(si broker.SubscriptionInfo) subJSON {
	return subJSON{si.ClientID, si.Filter, si.QoS, si.NoLocal, si.RetainAsPublished, si.RetainHandling,
		si.SubscriptionID}
}

func (s *Server) getClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, ok := s.b.ClientDetail(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no session with client id "+strconv.Quote(id))
		return
	}
	subs := make([]subJSON, len(d.Subscriptions))
	for i, si := range d.Subscriptions {
		subs[i] = toSubJSON(si)
	}
	expiry := int64(-1)
	if d.Expiry >= 0 {
		expiry = int64(d.Expiry / time.Second)
	}
	out := map[string]any{
		"client":          toClientJSON(d.ClientSummary),
		"subscriptions":   subs,
		"inflight":        d.Inflight,
		"queued":          d.Queued,
		"queued_bytes":    d.QueuedBytes,
		"session_expiry":  expiry,
		"connected_since": nil, // set below while connected
	}
	if d.Connected {
		if at, ok := s.since.get(d.ID, d.Remote); ok {
			out["connected_since"] = at.UTC()
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// kick ends a client's connection with DISCONNECT 0x98 (v5).
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.b.Disconnect(id, packet.AdministrativeAction) {
		writeError(w, http.StatusNotFound, "no connected client with client id "+strconv.Quote(id))
		return
	}
	s.log.Info("admin: client disconnected", "client", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"client": id, "disconnected": true})
}

func (s *Server) getSubscriptions(w http.ResponseWriter, r *http.Request) {
	p, err := readPaging(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if p.offset != 0 {
		writeError(w, http.StatusBadRequest, "subscriptions are paged with cursor, not offset")
		return
	}
	client, filter, _ := strings.Cut(p.cursor, "\x00")
	page, more := s.b.SubscriptionsPage(client, filter, p.limit)
	items := make([]subJSON, len(page))
	for i, si := range page {
		items[i] = toSubJSON(si)
	}
	next := ""
	if more {
		last := page[len(page)-1]
		next = encCursor(last.ClientID + "\x00" + last.Filter)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "next_cursor": next})
}

// prefixParam reads and checks ?prefix= (a topic name's leading levels).
func prefixParam(r *http.Request) (string, error) {
	p := r.URL.Query().Get("prefix")
	if p == "" {
		return "", nil
	}
	if strings.ContainsAny(p, "+#") {
		return "", errors.New("prefix is topic levels, without wildcards")
	}
	if err := topic.ValidateName(p); err != nil {
		return "", errors.New("prefix: " + err.Error())
	}
	return p, nil
}

// cursorAndPrefix reads the paging (cursor only: offsets are refused for
// what) and the prefix of a tree listing.
func cursorAndPrefix(r *http.Request, what string) (paging, string, error) {
	p, err := readPaging(r)
	if err == nil && p.offset != 0 {
		err = errors.New(what + " are paged with cursor, not offset")
	}
	prefix, err2 := prefixParam(r)
	if err == nil {
		err = err2
	}
	return p, prefix, err
}

// getTopics browses the topic tree one level at a time: the levels below
// prefix that hold retained messages, merged with those the live tree has
// seen messages for while a topic stream is open.
func (s *Server) getTopics(w http.ResponseWriter, r *http.Request) {
	p, prefix, err := cursorAndPrefix(r, "topics")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ret, moreR := s.b.RetainedChildren(prefix, p.cursor, p.limit)
	live, _, moreL, watching := s.live.children(prefix, p.cursor, 0, p.limit)
	byLevel := make(map[string]*topicEntry, len(live))
	for i := range live {
		live[i].Retained = false
		byLevel[live[i].Level] = &live[i]
	}
	merged := live
	for _, n := range ret {
		if e := byLevel[n.Level]; e != nil {
			e.Retained = n.Retained
			e.Children = max(e.Children, n.Children)
			continue
		}
		merged = append(merged, topicEntry{Level: n.Level, Topic: n.Topic, Retained: n.Retained, Children: n.Children})
	}
	slices.SortFunc(merged, func(a, b topicEntry) int { return strings.Compare(a.Level, b.Level) })
	more := moreR || moreL
	if len(merged) > p.limit {
		merged, more = merged[:p.limit], true
	}
	if merged == nil {
		merged = []topicEntry{}
	}
	next := ""
	if more {
		next = encCursor(merged[len(merged)-1].Level)
	}
	writeJSON(w, http.StatusOK, map[string]any{"prefix": prefix, "items": merged, "next_cursor": next,
		"live": watching})
}

type retainedJSON struct {
	Topic   string    `json:"topic"`
	Payload string    `json:"payload"`
	Base64  bool      `json:"payload_base64,omitempty"`
	Size    int       `json:"size"`
	QoS     byte      `json:"qos"`
	Created time.Time `json:"created,omitzero"`
}

func toRetainedJSON(m *broker.Message, max int) retainedJSON {
	p := m.Payload
	if max > 0 && len(p) > max {
		p = p[:max]
	}
	v, b64 := renderPayload(p)
	return retainedJSON{Topic: m.Topic, Payload: v, Base64: b64, Size: len(m.Payload), QoS: m.QoS, Created: m.Created}
}

func (s *Server) getRetained(w http.ResponseWriter, r *http.Request) {
	p, prefix, err := cursorAndPrefix(r, "retained messages")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	page, more := s.b.RetainedPage(prefix, p.cursor, p.limit)
	items := make([]retainedJSON, len(page))
	for i, m := range page {
		items[i] = toRetainedJSON(m, 1024)
	}
	next := ""
	if more {
		next = encCursor(page[len(page)-1].Topic)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "next_cursor": next})
}

func (s *Server) getRetainedOne(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("topic")
	m, ok := s.b.RetainedMessage(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no retained message on "+strconv.Quote(name))
		return
	}
	writeJSON(w, http.StatusOK, toRetainedJSON(m, 0))
}

// deleteRetained clears a topic's retained message by publishing an empty
// retained message as the server [MQTT-3.3.1-10].
func (s *Server) deleteRetained(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("topic")
	if err := topic.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, "topic: "+err.Error())
		return
	}
	if _, ok := s.b.RetainedMessage(name); !ok {
		writeError(w, http.StatusNotFound, "no retained message on "+strconv.Quote(name))
		return
	}
	if err := s.b.Publish(&broker.Message{Topic: name, Retain: true, Created: time.Now()}); err != nil {
		writeError(w, publishStatus(err), err.Error())
		return
	}
	s.log.Info("admin: retained message cleared", "topic", name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"topic": name, "deleted": true})
}

func publishStatus(err error) int {
	switch {
	case errors.Is(err, broker.ErrServerClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, broker.ErrSysTopic):
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

type publishReq struct {
	Topic         string `json:"topic"`
	Payload       string `json:"payload"`
	PayloadBase64 bool   `json:"payload_base64"`
	QoS           byte   `json:"qos"`
	Retain        bool   `json:"retain"`
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	var req publishReq
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if err := topic.ValidateName(req.Topic); err != nil {
		writeError(w, http.StatusBadRequest, "topic: "+err.Error())
		return
	}
	if req.QoS > 2 {
		writeError(w, http.StatusBadRequest, "qos must be 0, 1 or 2")
		return
	}
	payload := []byte(req.Payload)
	if req.PayloadBase64 {
		b, err := base64.StdEncoding.DecodeString(req.Payload)
		if err != nil {
			writeError(w, http.StatusBadRequest, "payload is not base64")
			return
		}
		payload = b
	}
	m := &broker.Message{Topic: req.Topic, Payload: payload, QoS: req.QoS, Retain: req.Retain, Created: time.Now()}
	if err := s.b.Publish(m); err != nil {
		writeError(w, publishStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"topic": req.Topic, "published": true, "size": len(payload)})
}

func (s *Server) getOpenAPI(w http.ResponseWriter, r *http.Request) {
	b, err := files.ReadFile("openapi.json")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}
