package topic

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// sub identifies one subscription in the tests' model of an index.
type sub struct {
	filter, group string
	key           int
}

// model is the brute-force reference for Index: a set of subscriptions
// matched one by one with Match.
type model map[sub]int

func (m model) match(name string) []Entry[int, int] {
	var out []Entry[int, int]
	for s, v := range m {
		if Match(s.filter, name) {
			out = append(out, Entry[int, int]{Filter: s.filter, Group: s.group, Key: s.key, Value: v})
		}
	}
	return out
}

func sortEntries(es []Entry[int, int]) []Entry[int, int] {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b Entry[int, int]) int {
		return cmp.Or(cmp.Compare(a.Filter, b.Filter), cmp.Compare(a.Group, b.Group),
			cmp.Compare(a.Key, b.Key), cmp.Compare(a.Value, b.Value))
	})
	return es
}

// checkAgainstModel compares ix.Match with the model for every name, both
// through the cache and by walking the trie, and the walk's order with the
// cached order.
func checkAgainstModel(t testing.TB, ix *Index[int, int], m model, names []string) {
	t.Helper()
	if ix.Len() != len(m) {
		t.Fatalf("Len() = %d, model has %d", ix.Len(), len(m))
	}
	for _, name := range names {
		got := ix.Match(name)
		want := m.match(name)
		if !slices.Equal(sortEntries(got), sortEntries(want)) {
			t.Fatalf("Match(%q) = %v, want (any order) %v", name, got, want)
		}
		ix.mu.RLock()
		walked := ix.matchLocked(name, nil)
		ix.mu.RUnlock()
		if !slices.Equal(got, walked) {
			t.Fatalf("Match(%q) = %v from the cache but %v from the trie", name, got, walked)
		}
	}
}

// checkEmpty fails unless the trie holds no node and no subscription.
func checkEmpty(t testing.TB, ix *Index[int, int]) {
	t.Helper()
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	r := &ix.root
	if ix.Len() != 0 || ix.nodes != 0 || ix.edges.len() != 0 || r.only != nil || r.x != nil || len(r.subs) != 0 {
		t.Fatalf("index not empty: Len %d, nodes %d, edges %d, root only %v ext %v subs %d",
			ix.Len(), ix.nodes, ix.edges.len(), r.only != nil, r.x != nil, len(r.subs))
	}
}

func TestNewIndexCacheSize(t *testing.T) {
	tests := []struct {
		size, slots int
	}{
		{0, defaultCacheSize},
		{-5, defaultCacheSize},
		{1, 2},
		{2, 2},
		{3, 4},
		{1000, 1024},
		{4096, 4096},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.size), func(t *testing.T) {
			ix := NewIndex[int, int](tt.size)
			if got := len(ix.cache.slots); got != tt.slots {
				t.Errorf("NewIndex(%d) has %d cache slots, want %d", tt.size, got, tt.slots)
			}
		})
	}
}

func TestIndexAddRemoveReplace(t *testing.T) {
	ix := NewIndex[int, int](0)
	if !ix.Add("a/b", "", 1, 10) {
		t.Fatal("first Add reported a replacement")
	}
	if ix.Add("a/b", "", 1, 11) {
		t.Fatal("second Add of the same subscription reported a new one")
	}
	if ix.Len() != 1 {
		t.Fatalf("Len() = %d after a replacement, want 1", ix.Len())
	}
	got := ix.Match("a/b")
	want := []Entry[int, int]{{Filter: "a/b", Key: 1, Value: 11}}
	if !slices.Equal(got, want) {
		t.Fatalf("Match after replace = %v, want %v", got, want)
	}
	if !ix.Add("a/b", "", 2, 20) {
		t.Fatal("Add of another key reported a replacement")
	}
	tests := []struct {
		name   string
		filter string
		group  string
		key    int
		want   bool
	}{
		{"missing path", "x/y", "", 1, false},
		{"missing key", "a/b", "", 3, false},
		{"missing group", "a/b", "g", 1, false},
		{"parent of existing", "a", "", 1, false},
		{"existing", "a/b", "", 1, true},
		{"again", "a/b", "", 1, false},
	}
	for _, tt := range tests {
		if got := ix.Remove(tt.filter, tt.group, tt.key); got != tt.want {
			t.Errorf("%s: Remove(%q, %q, %d) = %v, want %v", tt.name, tt.filter, tt.group, tt.key, got, tt.want)
		}
	}
	if got, want := ix.Match("a/b"), []Entry[int, int]{{Filter: "a/b", Key: 2, Value: 20}}; !slices.Equal(got, want) {
		t.Fatalf("Match after remove = %v, want %v", got, want)
	}
	if ix.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", ix.Len())
	}
	if !ix.Remove("a/b", "", 2) {
		t.Fatal("Remove of the last subscription failed")
	}
	checkEmpty(t, ix)
}

// TestIndexSharedGroups: MQTT-4.8.2 shared subscriptions: the same key in a
// normal subscription and in two groups is three entries.
func TestIndexSharedGroups(t *testing.T) {
	ix := NewIndex[int, int](0)
	m := model{}
	for _, s := range []sub{{"a/+", "", 1}, {"a/+", "g1", 1}, {"a/+", "g2", 1}, {"a/+", "g1", 2}, {"a/b", "g1", 1}} {
		if !ix.Add(s.filter, s.group, s.key, s.key) {
			t.Fatalf("Add(%v) reported a replacement", s)
		}
		m[s] = s.key
	}
	if ix.Add("a/+", "g1", 1, 5) {
		t.Fatal("re-adding a shared subscription reported a new one")
	}
	m[sub{"a/+", "g1", 1}] = 5
	names := []string{"a/b", "a/c", "a", "b/a"}
	checkAgainstModel(t, ix, m, names)
	if n := len(ix.Match("a/b")); n != 5 {
		t.Fatalf("Match(a/b) has %d entries, want 5", n)
	}
	if !ix.Remove("a/+", "g1", 1) {
		t.Fatal("Remove of a shared subscription failed")
	}
	delete(m, sub{"a/+", "g1", 1})
	checkAgainstModel(t, ix, m, names)
	for s := range m {
		if !ix.Remove(s.filter, s.group, s.key) {
			t.Fatalf("Remove(%v) failed", s)
		}
	}
	checkEmpty(t, ix)
}

func TestIndexMatchTable(t *testing.T) {
	all := NewIndex[int, int](0)
	m := model{}
	var names []string
	for i, tt := range matchTests {
		all.Add(tt.filter, "", i, i)
		m[sub{tt.filter, "", i}] = i
		names = append(names, tt.topic)
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex[int, int](0)
			ix.Add(tt.filter, "", 1, 1)
			got := len(ix.Match(tt.topic)) == 1
			if got != tt.want {
				t.Errorf("index with %q: Match(%q) found %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
		})
	}
	t.Run("all filters", func(t *testing.T) {
		checkAgainstModel(t, all, m, names)
	})
}

// randomFilter returns a valid filter made of a few levels drawn from a small
// alphabet, so that random filters and names overlap often.
func randomFilter(r *rand.Rand) string {
	levels := []string{"a", "b", "c", "", "$SYS", "+", "+", "#"}
	n := 1 + r.IntN(4)
	var s []byte
	for i := range n {
		if i > 0 {
			s = append(s, '/')
		}
		l := levels[r.IntN(len(levels))]
		if l == "#" && i != n-1 {
			l = "+"
		}
		s = append(s, l...)
	}
	return string(s)
}

func randomName(r *rand.Rand) string {
	levels := []string{"a", "b", "c", "", "$SYS", "$x"}
	n := 1 + r.IntN(5)
	var s []byte
	for i := range n {
		if i > 0 {
			s = append(s, '/')
		}
		s = append(s, levels[r.IntN(len(levels))]...)
	}
	return string(s)
}

// TestIndexRandom applies a fixed-seed random sequence of adds, replaces and
// removes, checking Match against a brute force over all subscriptions after
// every change (so a stale cached result is caught as soon as it appears).
func TestIndexRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ix := NewIndex[int, int](16)
	m := model{}
	names := make([]string, 40)
	for i := range names {
		names[i] = randomName(r)
	}
	groups := []string{"", "", "g1", "g2"}
	for step := range 3000 {
		if r.IntN(10) < 6 || len(m) == 0 {
			s := sub{randomFilter(r), groups[r.IntN(len(groups))], r.IntN(24)}
			v := r.IntN(3)
			_, existed := m[s]
			if added := ix.Add(s.filter, s.group, s.key, v); added == existed {
				t.Fatalf("step %d: Add(%v) = %v, existed %v", step, s, added, existed)
			}
			m[s] = v
		} else {
			var s sub
			if r.IntN(4) == 0 {
				s = sub{randomFilter(r), groups[r.IntN(len(groups))], r.IntN(24)}
			} else {
				keys := make([]sub, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				slices.SortFunc(keys, func(a, b sub) int {
					return cmp.Or(cmp.Compare(a.filter, b.filter), cmp.Compare(a.group, b.group), cmp.Compare(a.key, b.key))
				})
				s = keys[r.IntN(len(keys))]
			}
			_, existed := m[s]
			if removed := ix.Remove(s.filter, s.group, s.key); removed != existed {
				t.Fatalf("step %d: Remove(%v) = %v, existed %v", step, s, removed, existed)
			}
			delete(m, s)
		}
		if step%250 == 0 {
			checkAgainstModel(t, ix, m, names)
		} else {
			i := step % (len(names) - 3)
			checkAgainstModel(t, ix, m, names[i:i+3])
		}
	}
	for s := range m {
		ix.Remove(s.filter, s.group, s.key)
	}
	checkEmpty(t, ix)
}

// FuzzIndex decodes the input into adds and removes and checks the index
// against a brute force after each.
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0x80, 0x11, 0x22, 0x33, 0, 0x11, 0x22, 0x33, 1, 1, 1, 1})
	f.Add([]byte("the quick brown fox jumps over the lazy dog"))
	levels := []string{"a", "b", "", "$SYS", "+", "#"}
	names := []string{"a", "b", "a/b", "a/", "/", "/a", "a/b/c", "$SYS", "$SYS/a", "a//b", "b/a/a"}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix := NewIndex[int, int](4)
		m := model{}
		for len(data) >= 3 {
			op, fl, kg := data[0], data[1], data[2]
			data = data[3:]
			// Up to three levels from fl, two bits each plus a count.
			n := 1 + int(fl>>6)%3
			var b []byte
			for i := range n {
				if i > 0 {
					b = append(b, '/')
				}
				l := levels[int(fl>>(2*i))%len(levels)]
				if l == "#" && i != n-1 {
					l = "+"
				}
				b = append(b, l...)
			}
			s := sub{string(b), []string{"", "g"}[kg>>7], int(kg & 7)}
			if op&0x80 == 0 {
				ix.Add(s.filter, s.group, s.key, int(op))
				m[s] = int(op)
			} else {
				ix.Remove(s.filter, s.group, s.key)
				delete(m, s)
			}
			checkAgainstModel(t, ix, m, names)
		}
		for s := range m {
			if !ix.Remove(s.filter, s.group, s.key) {
				t.Fatalf("Remove(%v) failed", s)
			}
		}
		checkEmpty(t, ix)
	})
}

// TestIndexCacheInvalidation checks that every change is visible to the next
// Match even when the old result was cached, and that a change drops only the
// cached topics it can affect.
func TestIndexCacheInvalidation(t *testing.T) {
	ix := NewIndex[int, int](64)
	cached := func(name string) bool {
		_, ok := ix.cache.get(ix.cache.hash(name), name)
		return ok
	}
	steps := []struct {
		name   string
		change func()
		topic  string
		want   []int // keys, in any order
	}{
		{"empty result is cached", func() {}, "a/b", nil},
		{"literal add", func() { ix.Add("a/b", "", 1, 0) }, "a/b", []int{1}},
		{"plus add", func() { ix.Add("a/+", "", 2, 0) }, "a/b", []int{1, 2}},
		{"hash add", func() { ix.Add("#", "", 3, 0) }, "a/b", []int{1, 2, 3}},
		{"parent hash add", func() { ix.Add("a/b/#", "", 4, 0) }, "a/b", []int{1, 2, 3, 4}},
		{"shared add", func() { ix.Add("a/b", "g", 1, 0) }, "a/b", []int{1, 1, 2, 3, 4}},
		{"plus remove", func() { ix.Remove("a/+", "", 2) }, "a/b", []int{1, 1, 3, 4}},
		{"literal remove", func() { ix.Remove("a/b", "", 1) }, "a/b", []int{1, 3, 4}},
		{"hash remove", func() { ix.Remove("#", "", 3) }, "a/b", []int{1, 4}},
		{"MQTT-4.7.2-1 sys after hash", func() { ix.Add("#", "", 5, 0) }, "$SYS/x", nil},
		{"sys hash add", func() { ix.Add("$SYS/#", "", 6, 0) }, "$SYS/x", []int{6}},
		{"remove all", func() {
			ix.Remove("a/b/#", "", 4)
			ix.Remove("a/b", "g", 1)
			ix.Remove("#", "", 5)
			ix.Remove("$SYS/#", "", 6)
		}, "a/b", nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			ix.Match(st.topic) // make sure the old result is cached
			if !cached(st.topic) {
				t.Fatalf("%q not cached after Match", st.topic)
			}
			st.change()
			var keys []int
			for _, e := range ix.Match(st.topic) {
				keys = append(keys, e.Key)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, st.want) {
				t.Fatalf("Match(%q) keys = %v, want %v", st.topic, keys, st.want)
			}
		})
	}
	t.Run("replace value", func(t *testing.T) {
		ix.Add("v/w", "", 1, 1)
		ix.Match("v/w")
		ix.Add("v/w", "", 1, 2)
		if got := ix.Match("v/w"); len(got) != 1 || got[0].Value != 2 {
			t.Fatalf("Match after replace = %v, want value 2", got)
		}
	})
	t.Run("selective", func(t *testing.T) {
		for _, n := range []string{"x/y", "p/q", "v/w"} {
			ix.Match(n)
		}
		ix.Add("p/q", "", 9, 0) // literal: only p/q
		if !cached("x/y") || !cached("v/w") || cached("p/q") {
			t.Fatalf("literal add: cached x/y %v v/w %v p/q %v, want true true false", cached("x/y"), cached("v/w"), cached("p/q"))
		}
		ix.Match("p/q")
		ix.Add("+/y", "", 9, 0) // wildcard: x/y only
		if cached("x/y") || !cached("v/w") || !cached("p/q") {
			t.Fatalf("wildcard add: cached x/y %v v/w %v p/q %v, want false true true", cached("x/y"), cached("v/w"), cached("p/q"))
		}
		ix.Remove("z", "", 9) // removing nothing changes nothing
		if !cached("v/w") || !cached("p/q") {
			t.Fatal("a Remove that found nothing dropped cached results")
		}
	})
}

// TestIndexCacheBounded checks that the cache never holds more topics than
// its slots, that it accounts for the results it holds, and that large
// results stay within the budget.
func TestIndexCacheBounded(t *testing.T) {
	checkHeld := func(t *testing.T, c *matchCache[int, int]) {
		t.Helper()
		var sum int64
		for i := range c.slots {
			sum += c.slots[i].Load().cost()
		}
		if held := c.held.Load(); held != sum || held > c.budget {
			t.Fatalf("held = %d, slots hold %d, budget %d", held, sum, c.budget)
		}
	}
	t.Run("topics", func(t *testing.T) {
		ix := NewIndex[int, int](8)
		ix.Add("#", "", 1, 0)
		for i := range 1000 {
			name := "t/" + strconv.Itoa(i)
			if got := ix.Match(name); len(got) != 1 {
				t.Fatalf("Match(%q) = %v", name, got)
			}
			if n := ix.cache.cached(); n > 8 {
				t.Fatalf("%d topics cached, more than 8 slots", n)
			}
		}
		if n := ix.cache.cached(); n < 2 {
			t.Fatalf("only %d topics cached after 1000 matches", n)
		}
		checkHeld(t, &ix.cache)
	})
	t.Run("huge result not cached", func(t *testing.T) {
		ix := NewIndex[int, int](8) // budget 256: results over 64 entries are not cached
		for k := range 100 {
			ix.Add("#", "", k, 0)
		}
		if got := ix.Match("a"); len(got) != 100 {
			t.Fatalf("Match = %d entries, want 100", len(got))
		}
		if n := ix.cache.cached(); n != 0 {
			t.Fatalf("%d topics cached, want 0", n)
		}
	})
	t.Run("sweep", func(t *testing.T) {
		ix := NewIndex[int, int](16) // budget 512, results up to 128 entries
		for k := range 100 {
			ix.Add("#", "", k, 0)
		}
		for i := range 200 {
			if got := ix.Match(strconv.Itoa(i)); len(got) != 100 {
				t.Fatalf("Match = %d entries, want 100", len(got))
			}
			checkHeld(t, &ix.cache)
		}
		if n := ix.cache.cached(); n == 0 || n > 5 {
			t.Fatalf("%d topics cached, want 1..5 (budget 512, 101 each)", n)
		}
	})
}

// TestIndexManySubscribersOneFilter exercises the per-node map used once a
// filter has many subscribers.
func TestIndexManySubscribersOneFilter(t *testing.T) {
	ix := NewIndex[int, int](0)
	m := model{}
	r := rand.New(rand.NewPCG(3, 4))
	for k := range 200 {
		ix.Add("a/b", "", k, k)
		m[sub{"a/b", "", k}] = k
	}
	ix.Add("a/b", "", 7, 1000)
	m[sub{"a/b", "", 7}] = 1000
	checkAgainstModel(t, ix, m, []string{"a/b"})
	for _, k := range r.Perm(200)[:195] {
		if !ix.Remove("a/b", "", k) {
			t.Fatalf("Remove(%d) failed", k)
		}
		delete(m, sub{"a/b", "", k})
		if k%10 == 0 {
			checkAgainstModel(t, ix, m, []string{"a/b"})
		}
	}
	checkAgainstModel(t, ix, m, []string{"a/b"})
	n := ix.lookupLocked(ix.lookupLocked(&ix.root, "a", false), "b", true)
	if n.x != nil || cap(n.subs) > 2*idxMin {
		t.Fatalf("node keeps its ext %v, cap %d with %d subscriptions", n.x != nil, cap(n.subs), len(n.subs))
	}
}

// TestIndexPrune checks that removing subscriptions removes the nodes that
// no longer lead to any, so churn does not grow the trie.
func TestIndexPrune(t *testing.T) {
	ix := NewIndex[int, int](0)
	ix.Add("a/b/c", "", 1, 0)
	ix.Add("a/b", "", 1, 0)
	ix.Add("a/+/#", "", 1, 0)
	ix.Remove("a/b/c", "", 1)
	if ix.nodes != 4 { // a, b, +, # under +
		t.Fatalf("%d nodes after removing a/b/c, want 4", ix.nodes)
	}
	ix.Remove("a/+/#", "", 1)
	if ix.nodes != 2 {
		t.Fatalf("%d nodes after removing a/+/#, want 2", ix.nodes)
	}
	ix.Remove("a/b", "", 1)
	checkEmpty(t, ix)

	r := rand.New(rand.NewPCG(5, 6))
	m := model{}
	for round := range 3 {
		for i := range 2000 {
			s := sub{randomFilter(r), []string{"", "g"}[i%2], r.IntN(50)}
			if i%3 == 0 {
				s.filter = fmt.Sprintf("devices/%d/cmd", i)
			}
			ix.Add(s.filter, s.group, s.key, 0)
			m[s] = 0
		}
		subs := make([]sub, 0, len(m))
		for s := range m {
			subs = append(subs, s)
		}
		r.Shuffle(len(subs), func(i, j int) { subs[i], subs[j] = subs[j], subs[i] })
		for _, s := range subs {
			if !ix.Remove(s.filter, s.group, s.key) {
				t.Fatalf("round %d: Remove(%v) failed", round, s)
			}
			delete(m, s)
		}
		checkEmpty(t, ix)
	}
}

// TestIndexConcurrent runs writers and readers together (meant for -race).
// Each writer checks that its own Add and Remove are visible to its very next
// Match, which a stale cached result would break; readers check that every
// entry they get matches their topic.
func TestIndexConcurrent(t *testing.T) {
	ix := NewIndex[int, int](32)
	for k := range 100 {
		ix.Add("s/"+strconv.Itoa(k)+"/x", "", 1000+k, 0)
	}
	names := []string{"w/0", "w/1", "w/2", "w/3"}
	const writers, readers, rounds = 4, 4, 300
	var writersWG, readersWG sync.WaitGroup
	errs := make(chan error, writers+readers)
	stop := make(chan struct{})
	for w := range writers {
		writersWG.Go(func() {
			filters := []string{"w/" + strconv.Itoa(w), "w/+", "+/" + strconv.Itoa(w), "w/#", "#"}
			name := "w/" + strconv.Itoa(w)
			has := func(f string) bool {
				for _, e := range ix.Match(name) {
					if e.Key == w && e.Filter == f {
						return true
					}
				}
				return false
			}
			for i := range rounds {
				f := filters[i%len(filters)]
				ix.Add(f, "", w, i)
				if !has(f) {
					errs <- fmt.Errorf("writer %d: Match(%q) misses %q right after Add", w, name, f)
					return
				}
				ix.Remove(f, "", w)
				if has(f) {
					errs <- fmt.Errorf("writer %d: Match(%q) still has %q right after Remove", w, name, f)
					return
				}
			}
		})
	}
	for rd := range readers {
		readersWG.Go(func() {
			// Bounded, and yielding now and then: on a 2-core machine
			// readers that never block would otherwise starve the
			// writers they wait for.
			for i := range 100000 {
				select {
				case <-stop:
					return
				default:
				}
				if i%16 == 0 {
					runtime.Gosched()
				}
				name := names[(i+rd)%len(names)]
				for _, e := range ix.Match(name) {
					if !Match(e.Filter, name) {
						errs <- fmt.Errorf("reader %d: Match(%q) returned %q", rd, name, e.Filter)
						return
					}
				}
			}
		})
	}
	writersWG.Wait()
	close(stop)
	readersWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ix.Len() != 100 {
		t.Fatalf("Len() = %d after all writers removed theirs, want 100", ix.Len())
	}
}

// TestIndexMissRacesAdd checks that a result computed before an Add cannot
// be cached after that Add has invalidated the cache: a writer that starts
// while a Match is between walking the trie and caching its result must wait
// for it, or the stale result would outlive the Add.
func TestIndexMissRacesAdd(t *testing.T) {
	ix := NewIndex[int, int](0)
	ix.Add("a/b", "", 1, 0)
	added := make(chan struct{})
	ix.beforePut = func() {
		ix.beforePut = nil // only for the first miss
		go func() {
			ix.Add("a/+", "", 2, 0)
			close(added)
		}()
		// The Add must not finish while this Match is still running: give
		// it ample time to show that it does not.
		select {
		case <-added:
			t.Error("Add completed while a Match was about to cache its result")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if got := ix.Match("a/b"); len(got) != 1 {
		t.Fatalf("first Match = %v, want only a/b", got)
	}
	<-added
	if got := ix.Match("a/b"); len(got) != 2 {
		t.Fatalf("Match after the Add = %v, want a/b and a/+ (stale cached result)", got)
	}
}

// benchIndex builds an index of about 100k subscriptions shaped like a
// broker's: mostly exact per-device topics, some wildcards and shared groups.
func benchIndex(b *testing.B) *Index[int, int] {
	b.Helper()
	ix := NewIndex[int, int](0)
	k := 0
	add := func(filter, group string) {
		ix.Add(filter, group, k, k&3)
		k++
	}
	for i := range 60000 {
		add("devices/"+strconv.Itoa(i)+"/cmd", "") // 3 levels, exact
	}
	for i := range 20000 {
		add(fmt.Sprintf("site/%d/floor/%d/temp", i/100, i%100), "") // 5 levels, exact
	}
	for i := range 10000 {
		add("node"+strconv.Itoa(i), "") // 1 level, exact
	}
	for i := range 5000 {
		add("devices/"+strconv.Itoa(i)+"/+", "") // per-device wildcard
	}
	for i := range 4000 {
		add(fmt.Sprintf("site/%d/floor/+/#", i), "")
	}
	for i := range 8 {
		add("devices/+/cmd", "workers"+strconv.Itoa(i%2)) // shared groups
	}
	for range 2 {
		add("#", "")
		add("+", "")
		add("+/+/cmd", "")
		add("site/+/floor/+/temp", "")
	}
	if ix.Len() != 99016 {
		b.Fatalf("benchmark index has %d subscriptions", ix.Len())
	}
	return ix
}

var benchIx struct {
	once sync.Once
	ix   *Index[int, int]
}

func sharedBenchIndex(b *testing.B) *Index[int, int] {
	benchIx.once.Do(func() { benchIx.ix = benchIndex(b) })
	return benchIx.ix
}

func BenchmarkIndexAdd(b *testing.B) {
	filters := make([]string, 1<<16)
	for i := range filters {
		switch i % 8 {
		case 0:
			filters[i] = "devices/" + strconv.Itoa(i) + "/+"
		case 1:
			filters[i] = fmt.Sprintf("site/%d/floor/%d/#", i%200, i%100)
		default:
			filters[i] = "devices/" + strconv.Itoa(i) + "/cmd"
		}
	}
	b.ReportAllocs()
	ix := NewIndex[int, int](0)
	i := 0
	for b.Loop() {
		if i == len(filters) {
			// Start again with a fresh index so the run measures adds
			// to an index of up to 64k subscriptions, not an ever
			// growing one.
			b.StopTimer()
			ix, i = NewIndex[int, int](0), 0
			b.StartTimer()
		}
		ix.Add(filters[i], "", i, 0)
		i++
	}
}

func BenchmarkIndexAddRemove(b *testing.B) {
	ix := sharedBenchIndex(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f := "devices/" + strconv.Itoa(i&1023) + "/status"
		ix.Add(f, "", -1, 0)
		ix.Remove(f, "", -1)
		i++
	}
}

// benchNames returns n distinct topics with the given number of levels, each
// matching at least one subscription of benchIndex.
func benchNames(levels, n int) []string {
	names := make([]string, n)
	for i := range names {
		switch levels {
		case 1:
			names[i] = "node" + strconv.Itoa(i%10000)
		case 3:
			names[i] = "devices/" + strconv.Itoa(i%50000) + "/cmd"
		case 5:
			names[i] = fmt.Sprintf("site/%d/floor/%d/temp", (i/100)%200, i%100)
		}
	}
	return names
}

// BenchmarkIndexMatch measures Match over a 100k-subscription index: "hit"
// repeats one topic (served by the cache), "miss" cycles through 8192
// topics, eight times more than the cache holds, so nearly every call walks
// the trie and replaces a cached entry.
func BenchmarkIndexMatch(b *testing.B) {
	ix := sharedBenchIndex(b)
	for _, levels := range []int{1, 3, 5} {
		names := benchNames(levels, 8192)
		b.Run(fmt.Sprintf("levels=%d/hit", levels), func(b *testing.B) {
			b.ReportAllocs()
			name := names[1]
			for b.Loop() {
				if len(ix.Match(name)) == 0 {
					b.Fatal("no match")
				}
			}
		})
		b.Run(fmt.Sprintf("levels=%d/miss", levels), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if len(ix.Match(names[i&8191])) == 0 {
					b.Fatal("no match")
				}
				i++
			}
		})
	}
}

func BenchmarkIndexMatchParallel(b *testing.B) {
	ix := sharedBenchIndex(b)
	names := benchNames(3, 8192)
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				// 8 hot topics shared by all goroutines.
				if len(ix.Match(names[i&7])) == 0 {
					b.Error("no match")
					return
				}
				i++
			}
		})
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(names))
			for pb.Next() {
				if len(ix.Match(names[i&8191])) == 0 {
					b.Error("no match")
					return
				}
				i++
			}
		})
	})
}

// BenchmarkIndexMemory reports the heap held per subscription for 100k
// subscriptions on unique topics (devices/<id>/cmd), the common broker load.
func BenchmarkIndexMemory(b *testing.B) {
	filters := make([]string, 100000)
	for i := range filters {
		filters[i] = "devices/" + strconv.Itoa(i) + "/cmd"
	}
	var perSub float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ix := NewIndex[*int, int](0)
		keys := make([]int, len(filters))
		for i, f := range filters {
			ix.Add(f, "", &keys[i], 0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		// keys is part of the measurement: subtract it.
		perSub = (float64(after.HeapAlloc) - float64(before.HeapAlloc) - float64(8*len(keys))) / float64(len(filters))
		runtime.KeepAlive(ix)
		runtime.KeepAlive(keys)
	}
	b.ReportMetric(perSub, "B/sub")
}

// TestIndexEdgesShrink checks that the table of literal children is
// rebuilt small once most subscriptions are gone, so a burst does not hold
// memory forever.
func TestIndexEdgesShrink(t *testing.T) {
	ix := NewIndex[int, int](0)
	const n = 3 * shrinkEdgeSlots
	for i := range n {
		ix.Add("d/"+strconv.Itoa(i), "", 1, 0)
	}
	if ix.edges.len() != n { // "d" is the root's only child, not in edges
		t.Fatalf("edges hold %d, want %d", ix.edges.len(), n)
	}
	peak := len(ix.edges.slots)
	for i := range n - 10 {
		ix.Remove("d/"+strconv.Itoa(i), "", 1)
	}
	if len(ix.edges.slots) >= shrinkEdgeSlots || ix.edges.len() != 10 {
		t.Fatalf("after removing most: %d slots (%d at the peak), %d edges", len(ix.edges.slots), peak, ix.edges.len())
	}
	m := model{}
	for i := n - 10; i < n; i++ {
		m[sub{"d/" + strconv.Itoa(i), "", 1}] = 0
	}
	checkAgainstModel(t, ix, m, []string{"d/" + strconv.Itoa(n-1), "d/" + strconv.Itoa(n-11), "d/5"})
}

// TestIndexOnlyChild follows a node through its shapes: one literal child
// (node.only, not in edges), a second (both in edges), back to one (left
// in edges), a wildcard child (nodeExt) and empty again, matching the
// model at each step.
func TestIndexOnlyChild(t *testing.T) {
	ix := NewIndex[int, int](0)
	m := model{}
	names := []string{"dev/1/cmd", "dev/1/cfg", "dev/1", "dev/2/cmd", "dev/1/x/y"}
	add := func(f string, k int) {
		ix.Add(f, "", k, k)
		m[sub{f, "", k}] = k
		checkAgainstModel(t, ix, m, names)
	}
	remove := func(f string, k int) {
		if !ix.Remove(f, "", k) {
			t.Fatalf("Remove(%q, %d) found nothing", f, k)
		}
		delete(m, sub{f, "", k})
		checkAgainstModel(t, ix, m, names)
	}
	dev1 := func() *node[int, int] {
		return ix.lookupLocked(ix.lookupLocked(&ix.root, "dev", false), "1", false)
	}
	add("dev/1/cmd", 1)
	if d := dev1(); d.only == nil || d.only.level != "cmd" || d.x != nil || ix.edges.len() != 0 {
		t.Fatalf("one child: only %v, ext %v, edges %d", d.only, d.x, ix.edges.len())
	}
	add("dev/1/cfg", 2)
	if d := dev1(); d.only != nil || d.x == nil || d.x.kids != 2 || ix.edges.len() != 2 {
		t.Fatalf("two children: only %v, ext %v, edges %d", d.only, d.x, ix.edges.len())
	}
	remove("dev/1/cmd", 1)
	if d := dev1(); d.only != nil || d.x == nil || d.x.kids != 1 || ix.edges.len() != 1 {
		t.Fatalf("back to one: only %v, ext %v, edges %d", d.only, d.x, ix.edges.len())
	}
	add("dev/1/cmd", 3) // goes to edges too: the node's children are there
	add("dev/+/cmd", 4)
	add("dev/1/#", 5)
	add("dev/2/cmd", 6)
	remove("dev/1/cmd", 3)
	remove("dev/1/cfg", 2)
	if d := dev1(); d.only != nil || d.x == nil || d.x.kids != 0 || d.x.hash == nil {
		t.Fatalf("only '#' left: only %v, ext %v", d.only, d.x)
	}
	remove("dev/1/#", 5)
	remove("dev/+/cmd", 4)
	remove("dev/2/cmd", 6)
	checkEmpty(t, ix)
}
