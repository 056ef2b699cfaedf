package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/store/storetest"

	"syscall"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
)

// bootstrapAddr is a daemon's first p2p address, for the others' --bootstrap.
func (d *testDaemon) bootstrapAddr(t *testing.T) string {
	t.Helper()
	st := d.status(t)
	if st.PeerID == "" || len(st.Addrs) == 0 {
		t.Fatalf("daemon has no p2p address: %+v", st)
	}
	return st.Addrs[0]
}

// waitPeers waits until the daemon sees at least n peers.
func (d *testDaemon) waitPeers(t *testing.T, n int) {
	t.Helper()
	testkit.WaitForProcess(t, "the daemon to see its peers", 30*time.Second, d.exited, func() bool {
		st, err := d.client().Status(t.Context())
		return err == nil && len(st.Peers) >= n
	})
}

// TestNeighboursFirst: three daemons and a hub on loopback. A mounts and reads an flist;
// then B and C read the same files: every byte matches and the hub sends them nothing —
// their blocks, and the flist itself, come from A. With the hub stopped, a fourth daemon
// that knows no hub mounts the flist by CID and reads all that A had, from its
// neighbours alone.
func TestNeighboursFirst(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 21, flisttest.TreeOptions{})
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))

	metricsAddr := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t))
	a := runDaemon(t, "--hub", h.URL, "--metrics", metricsAddr)
	diffTrees(t, src, a.mountFlist(t, cid))
	aStatus := a.status(t)
	if aStatus.Fetched.Hub == 0 {
		t.Fatal("A read the tree without fetching from the hub")
	}

	boot := a.bootstrapAddr(t)
	site := []*testDaemon{a}
	for _, name := range []string{"B", "C"} {
		d := runDaemon(t, "--hub", h.URL, "--bootstrap", boot)
		site = append(site, d)
		d.waitPeers(t, 1)
		diffTrees(t, src, d.mountFlist(t, cid))
		st := d.status(t)
		if st.Fetched.Hub != 0 || st.Fetched.Peers == 0 {
			t.Errorf("%s fetched %d bytes from the hub and %d from peers; want 0 from the hub", name, st.Fetched.Hub, st.Fetched.Peers)
		}
	}
	if st := a.status(t); st.Served.Bytes == 0 || st.Served.Blocks == 0 {
		t.Errorf("A served %d bytes in %d blocks, want some", st.Served.Bytes, st.Served.Blocks)
	}
	// B and C got the flist from a neighbour (A, or C from B), not from the hub.
	var flists int64
	for _, d := range site {
		flists += d.status(t).Served.Flists
	}
	if flists != 2 {
		t.Errorf("the site served the flist %d times, want 2 (to B and C: neighbours before the hub)", flists)
	}
	if out := a.cli(t, "peers"); !strings.Contains(out, "2 peers") {
		t.Errorf("A's peers:\n%s", out)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := metricValue(t, string(body), `zosfs_fetched_bytes_total{source="hub"}`); got != float64(aStatus.Fetched.Hub) {
		t.Errorf("metrics say %v bytes from the hub, status %d", got, aStatus.Fetched.Hub)
	}
	if got := metricValue(t, string(body), "zosfs_peers"); got != 2 {
		t.Errorf("metrics say %v peers, want 2", got)
	}
	if got := metricValue(t, string(body), "zosfs_served_blocks_total"); got == 0 {
		t.Error("metrics say no block was served")
	}

	h.stop(syscall.SIGTERM)
	d := runDaemon(t, "--bootstrap", boot)
	d.waitPeers(t, 1)
	diffTrees(t, src, d.mountFlist(t, cid))
	if st := d.status(t); st.Fetched.Hub != 0 || st.Fetched.Peers == 0 {
		t.Errorf("without a hub: fetched %d from the hub, %d from peers", st.Fetched.Hub, st.Fetched.Peers)
	}
}

// metricValue is the value of the sample named name (with its labels) in a Prometheus
// text exposition; a sample that is not there fails the test.
func metricValue(t *testing.T, exposition, name string) float64 {
	t.Helper()
	v, ok := metricIn(exposition, name)
	if !ok {
		t.Fatalf("metric %s is not exposed", name)
	}
	return v
}

// metricIn returns the value of the metric line name in a Prometheus exposition, and
// whether there is one.
func metricIn(exposition, name string) (float64, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

// TestPrivateNetwork: daemons sharing a PSK exchange blocks; a daemon without it cannot
// join them, and so gets everything from the hub.
func TestPrivateNetwork(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 22, flisttest.TreeOptions{})
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	psk := filepath.Join(t.TempDir(), "swarm.key")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(psk, []byte(fmt.Sprintf("/key/swarm/psk/1.0.0/\n/base16/\n%x\n", key)), 0o600); err != nil {
		t.Fatal(err)
	}
	a := runDaemon(t, "--hub", h.URL, "--psk", psk)
	diffTrees(t, src, a.mountFlist(t, cid))
	boot := a.bootstrapAddr(t)

	member := runDaemon(t, "--hub", h.URL, "--psk", psk, "--bootstrap", boot)
	member.waitPeers(t, 1)
	diffTrees(t, src, member.mountFlist(t, cid))
	if st := member.status(t); st.Fetched.Hub != 0 || st.Fetched.Peers == 0 {
		t.Errorf("member: %d bytes from the hub, %d from peers; want all from peers", st.Fetched.Hub, st.Fetched.Peers)
	}

	outsider := runDaemon(t, "--hub", h.URL, "--bootstrap", boot)
	// The outsider dials A and A's end of the handshake refuses it: the outsider logs
	// the bootstrap peer unreachable after the connection was made, not refused.
	var refusal string
	testkit.WaitForProcess(t, "the outsider's dial of A to be refused", 20*time.Second, outsider.exited, func() bool {
		log, _ := os.ReadFile(outsider.log.Name())
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, "bootstrap peer unreachable") && strings.Contains(line, peerIDOf(boot)) {
				refusal = line
				return true
			}
		}
		return false
	})
	if strings.Contains(refusal, "connection refused") || strings.Contains(refusal, "no addresses") {
		t.Errorf("the outsider never reached A: %s", refusal)
	}
	t.Logf("the outsider's dial: %s", refusal)
	diffTrees(t, src, outsider.mountFlist(t, cid))
	st := outsider.status(t)
	if len(st.Peers) != 0 || st.Fetched.Peers != 0 || st.Fetched.Hub == 0 {
		t.Errorf("outsider: %d peers, %d bytes from peers, %d from the hub; want no peer, all from the hub", len(st.Peers), st.Fetched.Peers, st.Fetched.Hub)
	}
	if served := a.status(t).Served.Blocks; served == 0 {
		t.Error("A served no block to the member")
	}
}

// TestLargeFlistFromNeighbour: an flist far larger than a block (30,000 entries with long
// names: about 7 MB, against flist.MaxBlockStored's 4.7 MiB) goes from daemon to daemon
// over the flist protocol. A mounts it through the hub and reads a file; with the hub
// stopped, B, which knows no hub, mounts it by CID from A and lists and reads it.
func TestLargeFlistFromNeighbour(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	const files = 30000
	many := filepath.Join(src, "many")
	if err := os.Mkdir(many, 0o755); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("long-name-", 12)
	for i := range files {
		if err := os.WriteFile(filepath.Join(many, fmt.Sprintf("%s%06d", long, i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(src, "data.bin")
	writeRandomFile(t, data, 2<<20, 9)
	want := fileHash(t, data)
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))

	a := runDaemon(t, "--hub", h.URL)
	mpA := a.mountFlist(t, cid)
	fi, err := os.Stat(filepath.Join(a.Data, "flists", cid))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() <= flist.MaxBlockStored {
		t.Fatalf("the flist is %d bytes, not larger than a block (%d)", fi.Size(), flist.MaxBlockStored)
	}
	if got := fileHash(t, filepath.Join(mpA, "data.bin")); got != want {
		t.Fatal("A read data.bin wrong")
	}
	boot := a.bootstrapAddr(t)
	h.stop(syscall.SIGTERM)

	b := runDaemon(t, "--bootstrap", boot)
	b.waitPeers(t, 1)
	start := time.Now()
	mpB := b.mountFlist(t, cid)
	t.Logf("B mounted a %.1f MB flist from A in %v", float64(fi.Size())/1e6, time.Since(start).Round(time.Millisecond))
	ents, err := os.ReadDir(filepath.Join(mpB, "many"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != files || ents[0].Name() != long+"000000" || ents[files-1].Name() != fmt.Sprintf("%s%06d", long, files-1) {
		t.Errorf("B lists %d entries in many/, want %d", len(ents), files)
	}
	if got := fileHash(t, filepath.Join(mpB, "data.bin")); got != want {
		t.Error("B read data.bin wrong")
	}
	if got := fileHash(t, filepath.Join(b.Data, "flists", cid)); got != fileHash(t, filepath.Join(a.Data, "flists", cid)) {
		t.Error("B's copy of the flist differs from A's")
	}
	if st := b.status(t); st.Fetched.Hub != 0 || st.Fetched.Peers == 0 {
		t.Errorf("B fetched %d bytes from the hub, %d from peers; want all from peers", st.Fetched.Hub, st.Fetched.Peers)
	}
	if st := a.status(t); st.Served.Flists < 1 {
		t.Errorf("A's status says it served %d flists, want at least 1", st.Served.Flists)
	}
}
