package topic

import (
	"hash/maphash"
	"unsafe"
)

// edgeSet holds the literal children of the nodes that have more than one,
// found by (parent, level): an open-addressing hash table of node pointers
// (linear probing, deletion by shifting back, no tombstones). A slot is 8
// bytes where a Go map from (parent, level) to the node takes 32 a slot
// plus its control byte; the key is read from the node itself.
type edgeSet[K comparable, V any] struct {
	slots []*node[K, V] // empty or a power of two long
	n     int
	seed  maphash.Seed // set by NewIndex
}

const (
	minEdgeSlots = 16
	// shrinkEdgeSlots is the table length from which a table an eighth
	// full is rebuilt smaller, so that a burst of subscriptions does not
	// hold its memory forever.
	shrinkEdgeSlots = 4096
)

func (e *edgeSet[K, V]) hash(parent *node[K, V], level string) uint64 {
	// Nodes do not move: the parent's address is a stable part of the key.
	h := maphash.String(e.seed, level) ^ uint64(uintptr(unsafe.Pointer(parent)))*0x9e3779b97f4a7c15
	return h ^ h>>29
}

// len is the number of children held.
func (e *edgeSet[K, V]) len() int { return e.n }

// get returns the child of parent for level, or nil.
func (e *edgeSet[K, V]) get(parent *node[K, V], level string) *node[K, V] {
	if e.n == 0 {
		return nil
	}
	mask := uint64(len(e.slots) - 1)
	for i := e.hash(parent, level) & mask; ; i = (i + 1) & mask {
		c := e.slots[i]
		if c == nil {
			return nil
		}
		if c.parent == parent && c.level == level {
			return c
		}
	}
}

// put adds c, a child not yet held, under c.parent and c.level.
func (e *edgeSet[K, V]) put(c *node[K, V]) {
	if (e.n+1)*4 > len(e.slots)*3 { // at most three quarters full
		e.resize(max(minEdgeSlots, 2*len(e.slots)))
	}
	e.insert(c)
	e.n++
}

func (e *edgeSet[K, V]) insert(c *node[K, V]) {
	mask := uint64(len(e.slots) - 1)
	i := e.hash(c.parent, c.level) & mask
	for e.slots[i] != nil {
		i = (i + 1) & mask
	}
	e.slots[i] = c
}

// remove removes c, a child held; c.parent and c.level are still its key.
func (e *edgeSet[K, V]) remove(c *node[K, V]) {
	mask := uint64(len(e.slots) - 1)
	i := e.hash(c.parent, c.level) & mask
	for e.slots[i] != c {
		i = (i + 1) & mask
	}
	// Shift back each following entry of the run that may take the hole:
	// one whose home slot is not cyclically in (hole, its slot].
	for j := (i + 1) & mask; e.slots[j] != nil; j = (j + 1) & mask {
		home := e.hash(e.slots[j].parent, e.slots[j].level) & mask
		if (j-home)&mask >= (j-i)&mask {
			e.slots[i] = e.slots[j]
			i = j
		}
	}
	e.slots[i] = nil
	e.n--
	if len(e.slots) >= shrinkEdgeSlots && e.n < len(e.slots)/8 {
		size := minEdgeSlots
		for size*3 < e.n*4*2 { // about three eighths full after
			size *= 2
		}
		e.resize(size)
	}
	if e.n == 0 {
		e.slots = nil
	}
}

func (e *edgeSet[K, V]) resize(size int) {
	old := e.slots
	e.slots = make([]*node[K, V], size)
	for _, c := range old {
		if c != nil {
			e.insert(c)
		}
	}
}
