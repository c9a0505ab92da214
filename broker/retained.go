package broker

import (
	"strings"
	"sync"
	"time"
)

// retainedStore keeps the last retained message per topic in a tree of topic
// levels, so that a subscription with wildcards finds its retained messages
// without scanning every topic.
type retainedStore struct {
	mu    sync.RWMutex
	root  *retainedNode
	count int
}

type retainedNode struct {
	children map[string]*retainedNode
	msg      *Message
}

func (r *retainedStore) init() { r.root = &retainedNode{} }

// set stores m as the topic's retained message, or clears it when the
// payload is empty [MQTT-3.3.1-10], [MQTT-3.3.1-11].
func (r *retainedStore) set(m *Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(m.Payload) == 0 {
		r.deleteLocked(m.Topic)
		return
	}
	n := r.root
	for lvl := range strings.SplitSeq(m.Topic, "/") {
		c := n.children[lvl]
		if c == nil {
			if n.children == nil {
				n.children = make(map[string]*retainedNode)
			}
			c = &retainedNode{}
			n.children[lvl] = c
		}
		n = c
	}
	if n.msg == nil {
		r.count++
	}
	n.msg = m // replaces the previous one [MQTT-3.3.1-5]
}

// deleteLocked removes the topic's message and prunes empty nodes.
func (r *retainedStore) deleteLocked(name string) {
	levels := strings.Split(name, "/")
	path := make([]*retainedNode, 0, len(levels)+1)
	n := r.root
	path = append(path, n)
	for _, lvl := range levels {
		n = n.children[lvl]
		if n == nil {
			return
		}
		path = append(path, n)
	}
	if n.msg == nil {
		return
	}
	n.msg = nil
	r.count--
	for i := len(levels) - 1; i >= 0; i-- {
		child := path[i+1]
		if child.msg != nil || len(child.children) > 0 {
			break
		}
		delete(path[i].children, levels[i])
	}
}

// match returns the retained messages whose topics match filter, dropping
// expired ones. Topics beginning with '$' are not matched by a filter that
// begins with a wildcard [MQTT-4.7.2-1].
func (r *retainedStore) match(filter string) []*Message {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Message
	r.walk(r.root, strings.Split(filter, "/"), true, &out)
	if len(out) > 0 {
		now := time.Now()
		kept := out[:0]
		for _, m := range out {
			if !m.expired(now) {
				kept = append(kept, m)
			}
		}
		out = kept
	}
	return out
}

func (r *retainedStore) walk(n *retainedNode, levels []string, top bool, out *[]*Message) {
	if len(levels) == 0 {
		if n.msg != nil {
			*out = append(*out, n.msg)
		}
		return
	}
	switch lvl := levels[0]; lvl {
	case "#":
		// "a/#" matches "a" too [MQTT-4.7.1-2].
		if n.msg != nil && !top {
			*out = append(*out, n.msg)
		}
		r.collect(n, top, out)
	case "+":
		for name, c := range n.children {
			if top && strings.HasPrefix(name, "$") {
				continue
			}
			r.walk(c, levels[1:], false, out)
		}
	default:
		if c := n.children[lvl]; c != nil {
			r.walk(c, levels[1:], false, out)
		}
	}
}

// collect appends every message below n.
func (r *retainedStore) collect(n *retainedNode, top bool, out *[]*Message) {
	for name, c := range n.children {
		if top && strings.HasPrefix(name, "$") {
			continue
		}
		if c.msg != nil {
			*out = append(*out, c.msg)
		}
		r.collect(c, false, out)
	}
}

func (r *retainedStore) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.count
}
