package store_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// The zdb store is tested against Debian's redis-server, which speaks the same protocol
// as 0-db for GET, SET and EXISTS. Redis takes SELECT's argument as a database number,
// so these tests use no namespace, or a numeric one.

func TestZdbConformance(t *testing.T) {
	addr := storetest.StartRedis(t, "")
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.Open(t.Context(), "zdb://"+addr)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestZdbNamespace(t *testing.T) {
	addr := storetest.StartRedis(t, "")
	// Namespace "3" is SELECT 3 for redis: blocks put there are not in database 0.
	ns, err := store.Open(t.Context(), "zdb://"+addr+"/3")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	plain, err := store.Open(t.Context(), "zdb://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	id, data := storetest.ID(32, -1), []byte("in namespace 3")
	if err := ns.Put(t.Context(), id, data); err != nil {
		t.Fatal(err)
	}
	if got, err := ns.Get(t.Context(), id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get from namespace = %q, %v", got, err)
	}
	if ok, err := plain.Has(t.Context(), id); ok || err != nil {
		t.Errorf("block visible outside its namespace: %v, %v", ok, err)
	}
}

func TestZdbPassword(t *testing.T) {
	addr := storetest.StartRedis(t, "pa55word")
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.Open(t.Context(), "zdb://:pa55word@"+addr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s.String(), "pa55word") {
			t.Errorf("String() shows the password: %s", s)
		}
		return s
	})

	bad, err := store.Open(t.Context(), "zdb://:wrong-secret@"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, err = bad.Get(t.Context(), storetest.ID(32, -1))
	if err == nil || errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("wrong password: err = %v, want an error without the password", err)
	}
}

// Pooled connections that the server closed are replaced transparently.
func TestZdbReconnect(t *testing.T) {
	addr := storetest.StartRedis(t, "")
	s, err := store.Open(t.Context(), "zdb://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, data := storetest.ID(32, -1), []byte("survives")
	if err := s.Put(t.Context(), id, data); err != nil {
		t.Fatal(err)
	}
	// Kill every client connection but this one: the store's pooled connection dies.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := "*6\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nTYPE\r\n$6\r\nnormal\r\n$6\r\nSKIPME\r\n$3\r\nyes\r\n"
	if _, err := c.Write([]byte(cmd)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ":") || strings.HasPrefix(line, ":0") {
		t.Fatalf("CLIENT KILL: %q, %v (want at least one killed)", line, err)
	}
	got, err := s.Get(t.Context(), id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after the server closed the pooled connection = %q, %v", got, err)
	}
}

func TestZdbUnreachable(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(storetest.FreePort(t)) // nothing listens there
	s, err := store.Open(t.Context(), "zdb://user:hidden-pw@"+addr+"/ns")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Get(t.Context(), storetest.ID(32, -1))
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get from an unreachable zdb: err = %v", err)
	}
	if strings.Contains(err.Error(), "hidden-pw") || !strings.Contains(err.Error(), s.String()) {
		t.Errorf("error should name the store without password: %v", err)
	}
}

// A hostile server announcing a huge value does not make the store allocate it.
func TestZdbRefusesHugeReply(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				// Read one command (an array of bulk strings), then answer a giant bulk.
				line, err := r.ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "*") {
					return
				}
				n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
				for range n {
					hdr, err := r.ReadString('\n')
					if err != nil || !strings.HasPrefix(hdr, "$") {
						return
					}
					k, _ := strconv.Atoi(strings.TrimSpace(hdr[1:]))
					if _, err := io.ReadFull(r, make([]byte, k+2)); err != nil {
						return
					}
				}
				c.Write([]byte("$999999999999\r\n"))
			}()
		}
	}()
	s, err := store.Open(t.Context(), "zdb://"+l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Get(t.Context(), storetest.ID(32, -1))
	if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("huge reply: err = %v", err)
	}
}

// A server that accepts but never answers: the caller's deadline ends the call.
func TestZdbHangingServerHonoursDeadline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }() // held open, never answered
		}
	}()
	s, err := store.Open(t.Context(), "zdb://"+l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Get(ctx, storetest.ID(32, -1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Get took %v", d)
	}

	// Cancellation (no deadline) aborts a blocked call too.
	ctx2, cancel2 := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel2)
	if _, err := s.Has(ctx2, storetest.ID(32, -1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Has: err = %v, want Canceled", err)
	}
}
