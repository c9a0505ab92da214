package topic

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Entry is one subscription in an Index.
type Entry[K comparable, V any] struct {
	Filter string // the real filter (without $share/group/)
	Group  string // shared-subscription group, "" for a normal subscription
	Key    K      // the subscriber (the broker uses a pointer to its session)
	Value  V      // subscription options chosen by the broker
}

// Index is the subscription index: a trie of filter levels plus a bounded
// cache of match results. A subscription is identified by (filter, group,
// key): the same key may subscribe to one filter once without a group and
// once in each shared-subscription group.
//
// Index is safe for concurrent use. Add and Remove take an exclusive lock.
// Match first looks in the cache without any lock; on a miss it walks the trie
// under a read lock, so readers never block one another. Add and Remove
// invalidate exactly the cached results they can change (for a filter without
// wildcards only its own topic, otherwise every cached topic it matches)
// before they return, so a Match that starts after an Add or Remove returned
// sees its effect.
//
// The index keeps references to the filter and group strings it is given.
// Create one with NewIndex; the zero Index is not usable.
type Index[K comparable, V any] struct {
	mu sync.RWMutex
	// root is the node above the first level. Guarded by mu.
	root node[K, V]
	// edges holds the literal children of every node that has more than
	// one, found by parent and level: one table for the whole trie keeps
	// the nodes small (an only child is node.only). Guarded by mu.
	edges edgeSet[K, V]
	// nodes counts the nodes below the root. Guarded by mu.
	nodes int
	count atomic.Int64
	cache matchCache[K, V]
	// beforePut, when set by a test, runs on a cache miss between walking
	// the trie and caching the result.
	beforePut func()
	// scratch holds *[]Entry buffers that Match collects results in.
	scratch sync.Pool
}

// node is one level of the trie. A subscription is held by the node of its
// filter's last level. A node is 64 bytes: what most nodes lack (wildcard
// children, an index of many subscriptions, several literal children) is
// in nodeExt, allocated only by a node that has some.
type node[K comparable, V any] struct {
	parent *node[K, V]
	level  string // the literal level; "" for the root and for '+' and '#' nodes
	subs   []Entry[K, V]
	// only is the literal child of a node that has exactly one, kept out
	// of Index.edges (a level that is a device id, say, under which one
	// level follows); nil when the node has none or several.
	only *node[K, V]
	x    *nodeExt[K, V] // nil while the node needs none of it
}

// nodeExt is the part of a node that most nodes do without.
type nodeExt[K comparable, V any] struct {
	plus *node[K, V]
	hash *node[K, V] // a '#' as the last level; never has children
	// idx finds a subscription in subs by (group, key) once subs is long;
	// nil while subs is short and scanned instead.
	idx  map[subKey[K]]int32
	kids int32 // literal children in Index.edges (none while only is set)
}

// ext returns n's nodeExt, allocating it.
func (n *node[K, V]) ext() *nodeExt[K, V] {
	if n.x == nil {
		n.x = new(nodeExt[K, V])
	}
	return n.x
}

// dropExt frees n's nodeExt once it holds nothing.
func (n *node[K, V]) dropExt() {
	if x := n.x; x != nil && x.plus == nil && x.hash == nil && x.idx == nil && x.kids == 0 {
		n.x = nil
	}
}

func (n *node[K, V]) plus() *node[K, V] {
	if n.x == nil {
		return nil
	}
	return n.x.plus
}

func (n *node[K, V]) hash() *node[K, V] {
	if n.x == nil {
		return nil
	}
	return n.x.hash
}

// empty reports whether n holds no subscription and no child.
func (n *node[K, V]) empty() bool {
	return len(n.subs) == 0 && n.only == nil && n.x == nil
}

type subKey[K comparable] struct {
	group string
	key   K
}

const (
	// defaultCacheSize is the number of cached topics when NewIndex is
	// given no size.
	defaultCacheSize = 1024
	// idxMin is the number of subscriptions on one node from which a map
	// finds them; below idxMin/2 the map is dropped again.
	idxMin = 16
	// maxScratch is the largest Match buffer (in entries) kept for reuse.
	maxScratch = 4096
)

// NewIndex returns an empty index whose match cache holds about cacheSize
// topics (rounded up to a power of two); cacheSize <= 0 means 1024.
func NewIndex[K comparable, V any](cacheSize int) *Index[K, V] {
	if cacheSize <= 0 {
		cacheSize = defaultCacheSize
	}
	ix := &Index[K, V]{}
	ix.edges.seed = maphash.MakeSeed()
	ix.cache.init(cacheSize)
	return ix
}

// Len is the number of subscriptions.
func (ix *Index[K, V]) Len() int {
	return int(ix.count.Load())
}

// Add adds the subscription (filter, group, key) with value v, or replaces the
// value of that subscription when it exists. It reports whether it was new.
// filter is the real filter (without $share/group/), already validated by the
// caller; group is "" for a normal subscription.
func (ix *Index[K, V]) Add(filter, group string, key K, v V) (added bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := &ix.root
	for rest, more := filter, true; more; {
		var level string
		level, rest, more = nextLevel(rest)
		n = ix.childLocked(n, level, !more)
	}
	if i := n.find(group, key); i >= 0 {
		n.subs[i].Value = v
	} else {
		if len(n.subs) > 0 {
			// Share the stored filter's bytes instead of keeping another copy.
			filter = n.subs[0].Filter
		}
		n.insert(Entry[K, V]{Filter: filter, Group: group, Key: key, Value: v})
		ix.count.Add(1)
		added = true
	}
	ix.cache.invalidate(filter)
	return added
}

// Remove removes the subscription (filter, group, key) and reports whether it
// existed. Nodes left without subscriptions or children are removed.
func (ix *Index[K, V]) Remove(filter, group string, key K) (removed bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := &ix.root
	for rest, more := filter, true; more; {
		var level string
		level, rest, more = nextLevel(rest)
		if n = ix.lookupLocked(n, level, !more); n == nil {
			return false
		}
	}
	i := n.find(group, key)
	if i < 0 {
		return false
	}
	n.removeAt(i)
	ix.count.Add(-1)
	ix.pruneLocked(n)
	ix.cache.invalidate(filter)
	return true
}

// Match returns every subscription whose filter matches the topic name.
// The slice may be shared with the cache and with other callers: it must not
// be modified. Its order is unspecified but the same for the same index state.
// Match does not validate name.
func (ix *Index[K, V]) Match(name string) []Entry[K, V] {
	h := ix.cache.hash(name)
	if res, ok := ix.cache.get(h, name); ok {
		return res
	}
	buf, _ := ix.scratch.Get().(*[]Entry[K, V])
	if buf == nil {
		buf = new([]Entry[K, V])
	}
	ix.mu.RLock()
	*buf = ix.matchLocked(name, (*buf)[:0])
	// One allocation of the exact size, rather than the growing appends.
	var res []Entry[K, V]
	if len(*buf) > 0 {
		res = slices.Clone(*buf)
	}
	if ix.beforePut != nil {
		ix.beforePut()
	}
	// Stored while still holding the read lock, so no Add or Remove can
	// change the trie between computing the result and caching it: the
	// writer's invalidation always runs after the store.
	ix.cache.put(h, name, res)
	ix.mu.RUnlock()
	if cap(*buf) <= maxScratch {
		clear(*buf) // keep no subscriber alive from the pool
		ix.scratch.Put(buf)
	}
	return res
}

// lookupLocked returns the child of n for level (the filter's last level when
// last), or nil.
func (ix *Index[K, V]) lookupLocked(n *node[K, V], level string, last bool) *node[K, V] {
	switch {
	case level == "+":
		return n.plus()
	case level == "#" && last:
		return n.hash()
	default:
		return ix.literalLocked(n, level)
	}
}

// literalLocked returns n's literal child for level, or nil.
func (ix *Index[K, V]) literalLocked(n *node[K, V], level string) *node[K, V] {
	if c := n.only; c != nil {
		if c.level == level {
			return c
		}
		return nil
	}
	if n.x == nil || n.x.kids == 0 {
		return nil
	}
	return ix.edges.get(n, level)
}

// childLocked returns the child of n for level, creating it if needed.
func (ix *Index[K, V]) childLocked(n *node[K, V], level string, last bool) *node[K, V] {
	if c := ix.lookupLocked(n, level, last); c != nil {
		return c
	}
	c := &node[K, V]{parent: n}
	switch {
	case level == "+":
		n.ext().plus = c
	case level == "#" && last:
		n.ext().hash = c
	default:
		c.level = level
		switch {
		case n.only == nil && (n.x == nil || n.x.kids == 0):
			n.only = c
		default:
			if o := n.only; o != nil { // a second child: both go to edges
				n.only = nil
				ix.putEdgeLocked(n, o)
			}
			ix.putEdgeLocked(n, c)
		}
	}
	ix.nodes++
	return c
}

// putEdgeLocked files c under its parent n in edges.
func (ix *Index[K, V]) putEdgeLocked(n, c *node[K, V]) {
	ix.edges.put(c)
	n.ext().kids++
}

// pruneLocked removes n and then its ancestors while they hold nothing.
func (ix *Index[K, V]) pruneLocked(n *node[K, V]) {
	for n != &ix.root && n.empty() {
		p := n.parent
		switch {
		case p.only == n:
			p.only = nil
		case n == p.plus():
			p.x.plus = nil
		case n == p.hash():
			p.x.hash = nil
		default:
			ix.edges.remove(n)
			p.x.kids--
		}
		p.dropExt()
		n.parent = nil
		ix.nodes--
		n = p
	}
}

// matchLocked walks the trie for name.
func (ix *Index[K, V]) matchLocked(name string, out []Entry[K, V]) []Entry[K, V] {
	root := &ix.root
	level, rest, more := nextLevel(name)
	// [MQTT-4.7.2-1] a name starting with '$' is not matched by a filter
	// whose first level is a wildcard.
	if x := root.x; x != nil && !IsSys(name) {
		if x.hash != nil {
			out = append(out, x.hash.subs...)
		}
		if x.plus != nil {
			out = ix.walkLocked(x.plus, rest, more, out)
		}
	}
	if c := ix.literalLocked(root, level); c != nil {
		out = ix.walkLocked(c, rest, more, out)
	}
	return out
}

// walkLocked appends the subscriptions below n that match the rest of the
// name. n matched the previous level; more reports whether a level remains.
func (ix *Index[K, V]) walkLocked(n *node[K, V], name string, more bool, out []Entry[K, V]) []Entry[K, V] {
	x := n.x
	if !more {
		out = append(out, n.subs...)
		if x != nil && x.hash != nil {
			// [MQTT-4.7.1-2] "a/#" matches "a".
			out = append(out, x.hash.subs...)
		}
		return out
	}
	if x != nil && x.hash != nil {
		out = append(out, x.hash.subs...)
	}
	level, rest, more := nextLevel(name)
	if x != nil && x.plus != nil {
		out = ix.walkLocked(x.plus, rest, more, out)
	}
	if c := ix.literalLocked(n, level); c != nil {
		out = ix.walkLocked(c, rest, more, out)
	}
	return out
}

// find returns the position of (group, key) in n.subs, or -1.
func (n *node[K, V]) find(group string, key K) int {
	if n.x != nil && n.x.idx != nil {
		if i, ok := n.x.idx[subKey[K]{group, key}]; ok {
			return int(i)
		}
		return -1
	}
	for i := range n.subs {
		if n.subs[i].Key == key && n.subs[i].Group == group {
			return i
		}
	}
	return -1
}

func (n *node[K, V]) insert(e Entry[K, V]) {
	n.subs = append(n.subs, e)
	switch {
	case n.x != nil && n.x.idx != nil:
		n.x.idx[subKey[K]{e.Group, e.Key}] = int32(len(n.subs) - 1)
	case len(n.subs) >= idxMin:
		idx := make(map[subKey[K]]int32, len(n.subs))
		for i := range n.subs {
			idx[subKey[K]{n.subs[i].Group, n.subs[i].Key}] = int32(i)
		}
		n.ext().idx = idx
	}
}

// removeAt removes n.subs[i] by moving the last subscription into its place.
func (n *node[K, V]) removeAt(i int) {
	last := len(n.subs) - 1
	var idx map[subKey[K]]int32
	if n.x != nil {
		idx = n.x.idx
	}
	if idx != nil {
		delete(idx, subKey[K]{n.subs[i].Group, n.subs[i].Key})
		if i != last {
			idx[subKey[K]{n.subs[last].Group, n.subs[last].Key}] = int32(i)
		}
	}
	n.subs[i] = n.subs[last]
	n.subs[last] = Entry[K, V]{} // drop references held by the spare capacity
	n.subs = n.subs[:last]
	switch {
	case last == 0:
		n.subs = nil
	case cap(n.subs) > 2*idxMin && last < cap(n.subs)/4:
		n.subs = append([]Entry[K, V](nil), n.subs...)
	}
	if idx != nil && last < idxMin/2 {
		n.x.idx = nil
		n.dropExt()
	}
}

// The size class node must fit: a field that grows it past 64 bytes on a
// 64-bit platform fails to compile here; it is paid by every level of
// every filter.
var _ = [1]struct{}{}[unsafe.Sizeof(node[int, int]{})/65]
