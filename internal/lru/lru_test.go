package lru

import "testing"

func TestEvictsLeastRecent(t *testing.T) {
	c := New[string, int](2)
	c.Add("a", 1)
	c.Add("b", 2)
	if v, ok := c.Get("a"); !ok || v != 1 { // a is now the most recent
		t.Fatalf("Get(a) = %d, %v", v, ok)
	}
	c.Add("c", 3) // drops b
	if _, ok := c.Get("b"); ok {
		t.Error("b kept: the least recently used entry was not the one dropped")
	}
	for k, want := range map[string]int{"a": 1, "c": 3} {
		if v, ok := c.Get(k); !ok || v != want {
			t.Errorf("Get(%s) = %d, %v; want %d", k, v, ok, want)
		}
	}
	c.Add("a", 9) // already there: keeps its value, becomes the most recent
	c.Add("d", 4) // drops c
	if v, _ := c.Get("a"); v != 1 {
		t.Errorf("Add of a key already there changed its value to %d", v)
	}
	if _, ok := c.Get("c"); ok || c.Len() != 2 {
		t.Errorf("after adding d: c kept %v, %d entries", ok, c.Len())
	}
}

func TestAtLeastOne(t *testing.T) {
	c := New[int, int](0)
	c.Add(1, 1)
	if v, ok := c.Get(1); !ok || v != 1 {
		t.Errorf("a cache of size 0 holds nothing: %d, %v", v, ok)
	}
}
