package topic

import (
	"hash/maphash"
	"math/rand/v2"
	"sync/atomic"
)

// matchCache maps topic names to match results. It is a two-way set
// associative table of immutable entries behind atomic pointers: a lookup
// takes no lock and writes nothing, so cache hits scale across cores. A full
// set evicts one of its two entries at random, so the cache never holds more
// topics than it has slots.
//
// Besides topics, the cache bounds the result entries it holds (held, at most
// budget): a result larger than a quarter of the budget is not cached (its
// delivery costs far more than the walk), and when the total goes over the
// budget a sweep empties slots until it is back under half.
//
// Concurrency: get may run at any time. put runs with the index read-locked
// and invalidate with it write-locked, so a put never races an invalidate;
// puts race each other, which the atomic swaps and the held counter allow.
type matchCache[K comparable, V any] struct {
	seed     maphash.Seed
	slots    []atomic.Pointer[cacheEntry[K, V]]
	mask     uint64 // len(slots)-1; len(slots) is a power of two >= 2
	budget   int64
	held     atomic.Int64 // sum of cost() over the occupied slots
	sweeping atomic.Bool
}

type cacheEntry[K comparable, V any] struct {
	name string
	res  []Entry[K, V]
}

// resultBudgetPerSlot is the average number of result entries per cached
// topic that the cache holds before it sweeps.
const resultBudgetPerSlot = 32

func (e *cacheEntry[K, V]) cost() int64 {
	if e == nil {
		return 0
	}
	return 1 + int64(len(e.res))
}

func (c *matchCache[K, V]) init(size int) {
	n := 2
	for n < size {
		n <<= 1
	}
	c.seed = maphash.MakeSeed()
	c.slots = make([]atomic.Pointer[cacheEntry[K, V]], n)
	c.mask = uint64(n - 1)
	c.budget = int64(n) * resultBudgetPerSlot
}

func (c *matchCache[K, V]) hash(name string) uint64 {
	return maphash.String(c.seed, name)
}

// set returns the first slot of the two that may hold a name with hash h.
func (c *matchCache[K, V]) set(h uint64) uint64 {
	return h & c.mask &^ 1
}

// get returns the cached result for name, whose hash is h.
func (c *matchCache[K, V]) get(h uint64, name string) ([]Entry[K, V], bool) {
	s := c.set(h)
	if e := c.slots[s].Load(); e != nil && e.name == name {
		return e.res, true
	}
	if e := c.slots[s+1].Load(); e != nil && e.name == name {
		return e.res, true
	}
	return nil, false
}

// put caches res for name, whose hash is h. The index must be read-locked.
func (c *matchCache[K, V]) put(h uint64, name string, res []Entry[K, V]) {
	e := &cacheEntry[K, V]{name: name, res: res}
	if e.cost() > c.budget/4 {
		return
	}
	s := c.set(h)
	a, b := c.slots[s].Load(), c.slots[s+1].Load()
	var i uint64
	switch {
	case a == nil || a.name == name:
		i = s
	case b == nil || b.name == name:
		i = s + 1
	default:
		i = s + uint64(rand.Uint32()&1)
	}
	old := c.slots[i].Swap(e)
	if c.held.Add(e.cost()-old.cost()) > c.budget {
		c.sweep()
	}
}

// sweep empties slots, from a random one on, until the held results are back
// under half the budget. One sweep runs at a time; puts that find one running
// leave the work to it.
func (c *matchCache[K, V]) sweep() {
	if !c.sweeping.CompareAndSwap(false, true) {
		return
	}
	defer c.sweeping.Store(false)
	n := uint64(len(c.slots))
	start := rand.Uint64N(n)
	for j := uint64(0); j < n && c.held.Load() > c.budget/2; j++ {
		c.drop((start + j) & c.mask)
	}
}

// drop empties slot i.
func (c *matchCache[K, V]) drop(i uint64) {
	if old := c.slots[i].Swap(nil); old != nil {
		c.held.Add(-old.cost())
	}
}

// invalidate drops every cached result that a change to filter's
// subscriptions can alter. The index must be write-locked.
func (c *matchCache[K, V]) invalidate(filter string) {
	if c.held.Load() == 0 {
		return // nothing cached
	}
	if !HasWildcard(filter) {
		// A filter without wildcards matches only the identical name.
		s := c.set(c.hash(filter))
		for i := s; i < s+2; i++ {
			if e := c.slots[i].Load(); e != nil && e.name == filter {
				c.drop(i)
			}
		}
		return
	}
	for i := range c.slots {
		if e := c.slots[i].Load(); e != nil && Match(filter, e.name) {
			c.drop(uint64(i))
		}
	}
}

// cached returns the number of cached topics.
func (c *matchCache[K, V]) cached() int {
	n := 0
	for i := range c.slots {
		if c.slots[i].Load() != nil {
			n++
		}
	}
	return n
}
