package e2e

import (
	"bufio"
	"crypto/sha256"
	byteorder "encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/flist/flisttest"
	"github.com/zosfs/zosfs-agent/internal/testkit"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// runBadPeer builds and starts internal/tools/badpeer (a node that claims every block
// and answers with random bytes) with args, and returns it with its full multiaddr.
func runBadPeer(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "badpeer")
	if out, err := exec.Command("go", "build", "-o", bin, "../internal/tools/badpeer").CombinedOutput(); err != nil {
		t.Fatalf("build badpeer: %v\n%s", err, out)
	}
	addrFile := filepath.Join(dir, "badpeer.addr")
	out, err := os.Create(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	p := startBinary(t, "badpeer", bin, out, args...)
	var addr string
	testkit.WaitForProcess(t, "badpeer to write its address", 20*time.Second, p.exited, func() bool {
		b, _ := os.ReadFile(addrFile)
		line, ok := strings.CutSuffix(string(b), "\n")
		addr = line
		return ok && strings.Contains(line, "/p2p/")
	})
	return p, addr
}

// peerIDOf is the peer id at the end of a full multiaddr (…/p2p/<id>).
func peerIDOf(addr string) string { return addr[strings.LastIndex(addr, "/p2p/")+len("/p2p/"):] }

// scrape returns a daemon's Prometheus exposition, served at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// hasPeer reports whether the daemon's status lists peer id.
func hasPeer(t *testing.T, d *testDaemon, id string) bool {
	t.Helper()
	return slices.ContainsFunc(d.status(t).Peers, func(p api.Peer) bool { return p.ID == id })
}

// TestPoisonedPeer: a peer that claims every block and sends wrong bytes for each joins
// the site. B, whose only neighbour it is, asks it first for every block: B rejects the
// first answer, bans the peer (it leaves B's peers, the metrics count the rejection) and
// reads every byte correctly from the hub. C, which knows no hub and has both the bad
// peer and A (which read the tree) as neighbours, bans the bad peer too and reads every
// byte, and the flist itself, from its honest neighbours.
func TestPoisonedPeer(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	flisttest.MakeTree(t, src, 41, flisttest.TreeOptions{})
	// 48 blocks more: C asks the bad peer first for each block with a chance of 1/3 or
	// more (see below), so that it never does is below (2/3)^48 ≈ 4e-9.
	writeRandomFile(t, filepath.Join(src, "extra"), 24<<20, 41)
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))

	a := runDaemon(t, "--hub", h.URL)
	diffTrees(t, src, a.mountFlist(t, cid))

	// The bad peer knows no one: B's only neighbour is then it alone, so B's first block
	// is asked of it, whatever the timing.
	bad, badAddr := runBadPeer(t)
	badID := peerIDOf(badAddr)

	bMetrics := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t))
	b := runDaemon(t, "--hub", h.URL, "--bootstrap", badAddr, "--metrics", bMetrics)
	b.waitPeers(t, 1)
	if !hasPeer(t, b, badID) {
		t.Fatalf("B's neighbour is not the bad peer %s", badID)
	}
	diffTrees(t, src, b.mountFlist(t, cid))
	m := scrape(t, bMetrics)
	if got := metricValue(t, m, "zosfs_rejected_blocks_total"); got < 1 {
		t.Errorf("B rejected %v blocks; want at least 1 (was the bad peer asked at all?)", got)
	}
	if got, _ := metricIn(m, fmt.Sprintf(`zosfs_peer_fetched_bytes_total{peer=%q}`, badID)); got > 0 {
		t.Errorf("B accepted %v bytes from the bad peer", got)
	}
	// Banned, not gone: the bad peer still runs, and B keeps it out.
	select {
	case <-bad.exited:
		t.Fatal("the bad peer exited")
	default:
	}
	if hasPeer(t, b, badID) {
		t.Error("the bad peer is still among B's peers")
	}
	if st := b.status(t); st.Rejected < 1 || st.Banned != 1 {
		t.Errorf("B's status: rejected %d, banned %d; want ≥ 1 and 1", st.Rejected, st.Banned)
	}
	if out := b.cli(t, "peers"); strings.Contains(out, badID) {
		t.Errorf("zosfs-agent peers still lists the bad peer:\n%s", out)
	}
	if st := b.status(t); st.Fetched.Peers != 0 || st.Fetched.Hub == 0 {
		t.Errorf("B fetched %d bytes from peers and %d from the hub; want all from the hub", st.Fetched.Peers, st.Fetched.Hub)
	}

	// C has no hub and two or three neighbours (A, the bad peer, and B if the DHT leads C
	// to it): each block goes first to one of them at random, so the bad peer is asked
	// (and banned) within the first few blocks; every block, and the flist itself, must
	// then come from A or B.
	cMetrics := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t))
	c := runDaemon(t, "--bootstrap", badAddr, "--bootstrap", a.bootstrapAddr(t), "--metrics", cMetrics)
	c.waitPeers(t, 2)
	diffTrees(t, src, c.mountFlist(t, cid))
	m = scrape(t, cMetrics)
	if got := metricValue(t, m, "zosfs_rejected_blocks_total"); got < 1 {
		t.Errorf("C rejected %v blocks; want at least 1", got)
	}
	if got, _ := metricIn(m, fmt.Sprintf(`zosfs_peer_fetched_bytes_total{peer=%q}`, badID)); got > 0 {
		t.Errorf("C accepted %v bytes from the bad peer", got)
	}
	st := c.status(t)
	if st.Fetched.Hub != 0 || st.Fetched.Peers == 0 {
		t.Errorf("C fetched %d bytes from the hub and %d from peers; want all from peers", st.Fetched.Hub, st.Fetched.Peers)
	}
	if hasPeer(t, c, badID) {
		t.Error("the bad peer is still among C's peers")
	}
}

// writeRandomFile writes size incompressible bytes, reproducible from seed, to path.
func writeRandomFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	byteorder.LittleEndian.PutUint64(key[:], seed)
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8(key), size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPeerKilledMidTransfer: B reads a large file whose blocks it gets from A, its only
// neighbour; A is killed (SIGKILL) in the middle. B's read completes without error, byte
// for byte equal to the source: what A did not send, B fetches from the hub.
func TestPeerKilledMidTransfer(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	big := filepath.Join(src, "big")
	const size = 64 << 20
	writeRandomFile(t, big, size, 7)
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	stored := storedSize(t, big)
	want := fileHash(t, big)

	// A serves 16 MiB/s: B's read from it lasts about 4 s, so the kill lands in its middle.
	a := runDaemon(t, "--hub", h.URL, "--serve-rate", "16MiB")
	a.cli(t, "pull", cid) // every block in A's cache
	b := runDaemon(t, "--hub", h.URL, "--bootstrap", a.bootstrapAddr(t))
	b.waitPeers(t, 1)
	mp := b.mountFlist(t, cid)

	type result struct {
		sum string
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := os.Open(filepath.Join(mp, "big"))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		sum := sha256.New()
		n, err := io.Copy(sum, f)
		done <- result{fmt.Sprintf("%x", sum.Sum(nil)), n, err}
	}()
	testkit.WaitForProcess(t, "an eighth of B's read to come from A", 60*time.Second, b.exited, func() bool {
		st, err := b.client().Status(t.Context())
		return err == nil && st.Fetched.Peers >= stored/8
	})
	a.cmd.Process.Kill() // kill -9, by pid
	<-a.exited
	atKill := b.status(t)
	select {
	case r := <-done:
		t.Fatalf("B's read ended (%d bytes, err %v) before A was killed: the test proves nothing", r.n, r.err)
	default:
	}
	if atKill.Fetched.Peers == 0 || atKill.Fetched.Peers >= stored {
		t.Fatalf("when A was killed B had %d of %d bytes from peers; want some, not all", atKill.Fetched.Peers, stored)
	}

	var r result
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("B's read did not end within 2 minutes of A's death")
	}
	if r.err != nil || r.n != size {
		t.Fatalf("B read %d of %d bytes: %v", r.n, size, r.err)
	}
	if r.sum != want {
		t.Fatal("B's bytes differ from the source")
	}
	st := b.status(t)
	if st.Fetched.Hub == 0 || st.Fetched.Peers+st.Fetched.Hub < stored {
		t.Errorf("B fetched %d bytes from peers and %d from the hub; want the %d bytes A did not send from the hub",
			st.Fetched.Peers, st.Fetched.Hub, stored-st.Fetched.Peers)
	}
	t.Logf("B got %d of %d bytes from A before the kill, %d in all from A, %d from the hub",
		atKill.Fetched.Peers, stored, st.Fetched.Peers, st.Fetched.Hub)
}
