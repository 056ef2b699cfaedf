package hub_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/hub"
)

// stallTimeout is the hub's body stall timeout in these tests; waitLimit is how long a
// test waits for the hub to act on a stall before it calls the stall unbounded.
const (
	stallTimeout = 300 * time.Millisecond
	waitLimit    = 10 * time.Second
)

// dialHub opens a raw connection to the hub at url, closed at cleanup.
func dialHub(t *testing.T, url string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestBodyStalls (issue 13, 5): a body that stops coming is cut within the stall
// timeout, whether the handler reads it (a chunked POST /blocks/missing: 408) or not (a
// GET announcing 100000 bytes and sending 2: the connection is closed).
func TestBodyStalls(t *testing.T) {
	h := startHub(t, hub.Config{BodyStallTimeout: stallTimeout})

	t.Run("unread", func(t *testing.T) {
		c := dialHub(t, h.URL)
		fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: hub\r\nContent-Length: 100000\r\n\r\nab")
		c.SetReadDeadline(time.Now().Add(waitLimit))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		start := time.Now()
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("the connection was not closed %s after the body stalled: %v", waitLimit, err)
		}
		if d := time.Since(start); d > waitLimit/2 {
			t.Errorf("the connection closed %s after the answer", d)
		}
	})

	t.Run("read", func(t *testing.T) {
		c := dialHub(t, h.URL)
		fmt.Fprintf(c, "POST /blocks/missing HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"ids\r\n")
		c.SetReadDeadline(time.Now().Add(waitLimit))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer %s after the body stalled: %v", waitLimit, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("status %d, want 408", resp.StatusCode)
		}
	})
}

// TestBodiesPerClient (issue 13, 5): one address holds at most MaxBodiesPerClient
// bodies in flight: of three stalled bodies with a bound of two, one gets 429 at once
// and the other two 408 when they stall; a request without a body is served meanwhile,
// and once the stalled ones are cut the hub takes that address's bodies again.
func TestBodiesPerClient(t *testing.T) {
	const stall = 5 * time.Second
	h := startHub(t, hub.Config{BodyStallTimeout: stall, MaxBodiesPerClient: 2})
	statuses := make(chan int, 3)
	for range 3 {
		c := dialHub(t, h.URL)
		fmt.Fprintf(c, "POST /blocks/missing HTTP/1.1\r\nHost: hub\r\nContent-Length: 1000\r\n\r\n{")
		go func() {
			c.SetReadDeadline(time.Now().Add(waitLimit + stall))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	// The first answer is the refusal, long before the stalls are cut.
	start := time.Now()
	if code := <-statuses; code != http.StatusTooManyRequests || time.Since(start) > stall/2 {
		t.Fatalf("the first answer to three bodies in flight: %d after %s, want 429 at once", code, time.Since(start))
	}
	if resp, err := http.Get(h.URL + "/health"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("a request without a body while the bodies are held: %v", err)
	} else {
		resp.Body.Close()
	}
	for range 2 {
		if code := <-statuses; code != http.StatusRequestTimeout {
			t.Errorf("a stalled body got %d, want 408", code)
		}
	}
	resp, err := http.Post(h.URL+"/blocks/missing", "application/json", strings.NewReader(`{"ids":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a body after the stalled ones were cut: %d", resp.StatusCode)
	}
}
