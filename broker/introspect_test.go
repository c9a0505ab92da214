package broker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

func TestIntrospectClientsPage(t *testing.T) {
	s := brokertest.Start(t)
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("c%02d", 6-i) // connect out of order
		c := brokertest.Dial(t, s.Addr, packet.V311)
		c.Connect(&packet.Connect{ClientID: id, CleanStart: true, KeepAlive: 60, Username: "u" + id, HasUsername: true})
		if i == 2 {
			c.Subscribe(1, 1, "a/b", "x/#")
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	brokertest.Eventually(t, 5*time.Second, func() bool { return s.SessionCount() == 7 })

	var got []string
	cursor := ""
	for range 10 {
		page, next := s.ClientsPage(broker.ClientFilter{}, cursor, 0, 3)
		for _, c := range page {
			got = append(got, c.ID)
			if !c.Connected || c.Remote == "" || c.Protocol != 4 || c.Username != "u"+c.ID {
				t.Errorf("summary %+v", c)
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("paged ids %v, want %v", got, ids)
	}
	page, _ := s.ClientsPage(broker.ClientFilter{}, "", 5, 10)
	if len(page) != 2 || page[0].ID != "c05" {
		t.Fatalf("offset 5: %+v", page)
	}
	page, next := s.ClientsPage(broker.ClientFilter{Username: "uc03"}, "", 0, 10)
	if len(page) != 1 || page[0].ID != "c03" || next != "" {
		t.Fatalf("user filter: %+v %q", page, next)
	}
	d, ok := s.ClientDetail("c04")
	if !ok || len(d.Subscriptions) != 2 || d.Subscriptions[0].Filter != "a/b" || d.Subscriptions[1].QoS != 1 {
		t.Fatalf("detail %+v %v", d, ok)
	}
	if _, ok := s.ClientDetail("nobody"); ok {
		t.Fatal("detail of a missing client")
	}
	subs, more := s.SubscriptionsPage("", "", 1)
	if len(subs) != 1 || !more || subs[0].Filter != "a/b" {
		t.Fatalf("subs page 1: %+v %v", subs, more)
	}
	subs, more = s.SubscriptionsPage(subs[0].ClientID, subs[0].Filter, 5)
	if len(subs) != 1 || more || subs[0].Filter != "x/#" {
		t.Fatalf("subs page 2: %+v %v", subs, more)
	}
}

func TestIntrospectRetained(t *testing.T) {
	s := brokertest.Start(t)
	topics := []string{"a", "a/b", "a/b/c", "a/c", "b/x", "b/y/z", "c"}
	for _, tp := range topics {
		if err := s.Publish(&broker.Message{Topic: tp, Payload: []byte(tp), Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	cursor := ""
	for range 10 {
		page, more := s.RetainedPage("", cursor, 2)
		for _, m := range page {
			got = append(got, m.Topic)
		}
		if !more {
			break
		}
		cursor = page[len(page)-1].Topic
	}
	if !slices.Equal(got, topics) {
		t.Fatalf("retained pages %v, want %v", got, topics)
	}
	page, _ := s.RetainedPage("b", "", 10)
	if len(page) != 2 || page[0].Topic != "b/x" || page[1].Topic != "b/y/z" {
		t.Fatalf("prefix b: %v", page)
	}
	kids, more := s.RetainedChildren("", "", 2)
	if len(kids) != 2 || !more || kids[0].Level != "a" || !kids[0].Retained || kids[0].Children != 2 {
		t.Fatalf("root children %+v %v", kids, more)
	}
	kids, more = s.RetainedChildren("", "b", 2)
	if len(kids) != 1 || more || kids[0].Topic != "c" {
		t.Fatalf("root children after b %+v %v", kids, more)
	}
	kids, _ = s.RetainedChildren("b", "", 10)
	if len(kids) != 2 || kids[1].Topic != "b/y" || kids[1].Retained {
		t.Fatalf("children of b %+v", kids)
	}
	if m, ok := s.RetainedMessage("b/y/z"); !ok || string(m.Payload) != "b/y/z" {
		t.Fatalf("retained message %v %v", m, ok)
	}
}
