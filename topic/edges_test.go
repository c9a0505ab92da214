package topic

import (
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestEdgeSetModel drives the table with random adds and removes against a
// Go map, small enough that runs wrap around the end of the table and every
// removal shifts entries back, and large enough to grow and shrink.
func TestEdgeSetModel(t *testing.T) {
	type key struct {
		parent *node[int, int]
		level  string
	}
	parents := make([]*node[int, int], 5)
	for i := range parents {
		parents[i] = new(node[int, int])
	}
	for _, size := range []int{12, 200, 3 * shrinkEdgeSlots} {
		e := edgeSet[int, int]{seed: maphash.MakeSeed()}
		m := map[key]*node[int, int]{}
		r := rand.New(rand.NewPCG(uint64(size), 7))
		check := func(step int) {
			if e.len() != len(m) {
				t.Fatalf("size %d step %d: len %d, want %d", size, step, e.len(), len(m))
			}
			for k, c := range m {
				if got := e.get(k.parent, k.level); got != c {
					t.Fatalf("size %d step %d: get(%p, %q) = %p, want %p", size, step, k.parent, k.level, got, c)
				}
			}
			for range 8 {
				k := key{parents[r.IntN(len(parents))], strconv.Itoa(r.IntN(4 * size))}
				if got := e.get(k.parent, k.level); got != m[k] {
					t.Fatalf("size %d step %d: get(%q) = %p, want %p", size, step, k.level, got, m[k])
				}
			}
		}
		steps := 4 * size
		if size > 1000 {
			steps = 2 * size
		}
		for step := range steps {
			k := key{parents[r.IntN(len(parents))], strconv.Itoa(r.IntN(size))}
			// Fill up over the first half, empty out over the second.
			adding := step < steps/2 && r.IntN(4) != 0 || step >= steps/2 && r.IntN(4) == 0
			if c := m[k]; c != nil && !adding {
				e.remove(c)
				delete(m, k)
			} else if c == nil && adding {
				c = &node[int, int]{parent: k.parent, level: k.level}
				e.put(c)
				m[k] = c
			}
			if size < 1000 || step%97 == 0 {
				check(step)
			}
		}
		for k, c := range m {
			e.remove(c)
			delete(m, k)
		}
		check(steps)
		if e.slots != nil {
			t.Errorf("size %d: an empty table keeps %d slots", size, len(e.slots))
		}
	}
}
