package cache

import "container/heap"

// lruHeap orders the unpinned cached blocks by last access, least recent first: a heap
// rather than a list because unpinning puts blocks back at the place their last access
// gives them, not at one end. Every operation is O(log n).
type lruHeap []*entry

func (h lruHeap) Len() int           { return len(h) }
func (h lruHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h lruHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}

func (h *lruHeap) Push(x any) {
	e := x.(*entry)
	e.idx = len(*h)
	*h = append(*h, e)
}

func (h *lruHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}

// lruPush makes e evictable.
func (c *Cache) lruPush(e *entry) {
	heap.Push(&c.lru, e)
	c.lruBytes += e.size
}

// lruRemove makes e unevictable (it is pinned, or leaving the cache).
func (c *Cache) lruRemove(e *entry) {
	heap.Remove(&c.lru, e.idx)
	c.lruBytes -= e.size
}

// lruFix restores the order after e.seq changed.
func (c *Cache) lruFix(e *entry) { heap.Fix(&c.lru, e.idx) }
