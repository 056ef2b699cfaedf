package e2e

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosfs/zosfs-agent/internal/testkit"
)

// testTmpfs mounts a small tmpfs at dir holding f = "precious", detached at cleanup: the
// filesystem of an admin, which the daemon must never touch.
func testTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("precious", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pushHello pushes a tree of one file, hello, to the hub and returns its CID.
func pushHello(t *testing.T, h *testHub) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	return lastLine(agent(t, "push", "--hub", h.URL, src))
}

// tmpfsDir is a new directory holding a tmpfs of size (as mount -o size= takes it), for
// a daemon's data dir that the test can fill; it is detached at cleanup.
func tmpfsDir(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("zosfs-test-data", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// isTmpfs reports whether dir is a tmpfs holding f = "precious".
func isTmpfs(t *testing.T, dir string) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Logf("statfs %s: type %#x, %v", dir, st.Type, err)
		return false
	}
	got, err := os.ReadFile(filepath.Join(dir, "f"))
	return err == nil && string(got) == "precious"
}

// TestRestartLeavesForeignMounts (issue 13, 1): after kill -9, the restarted daemon
// restores its own mounts but never unmounts or hides someone else's filesystem: not a
// tmpfs mounted at a recorded mountpoint after the kill, nor one mounted under a zosfs
// mount while it was live.
func TestRestartLeavesForeignMounts(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	d := runDaemon(t, "--hub", h.URL)
	over := d.mountFlist(t, cid)
	under := d.mountFlist(t, cid)
	ours := d.mountFlist(t, cid)
	testTmpfs(t, filepath.Join(under, "sub"))

	d.cmd.Process.Kill() // kill -9, by pid
	<-d.exited
	if err := unix.Unmount(over, unix.MNT_DETACH); err != nil { // the admin's umount -l
		t.Fatal(err)
	}
	testTmpfs(t, over)

	d.restart()
	if !isTmpfs(t, over) {
		t.Errorf("the tmpfs mounted at %s after the kill is gone or hidden", over)
	}
	if !isTmpfs(t, filepath.Join(under, "sub")) {
		t.Errorf("the tmpfs under the zosfs mount %s is gone", under)
	}
	if got, err := os.ReadFile(filepath.Join(ours, "hello")); err != nil || string(got) != "hello" {
		t.Errorf("the daemon's own mount was not restored: %q, %v", got, err)
	}
	var mps []string
	for _, m := range d.status(t).Mounts {
		mps = append(mps, m.Mountpoint)
	}
	if len(mps) != 1 || mps[0] != ours {
		t.Errorf("mounts after restart: %v, want [%s]", mps, ours)
	}
	log, _ := os.ReadFile(d.log.Name())
	if n := strings.Count(string(log), "not restoring a mount"); n != 2 {
		t.Errorf("the log says %d times that a mount is not restored, want 2", n)
	}
}

// TestPullCacheTooSmall (issue 13, 2): a pull the cache cannot hold fails with a clear
// error and leaves nothing pinned, instead of reporting success for blocks it dropped.
func TestPullCacheTooSmall(t *testing.T) {
	h := runHub(t)
	src := t.TempDir()
	if out, err := exec.Command("go", "run", "../internal/tools/gentree", "-size", "60MiB", "-seed", "13", src).CombinedOutput(); err != nil {
		t.Fatalf("gentree: %v\n%s", err, out)
	}
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	d := runDaemon(t, "--hub", h.URL, "--cache-max", "20MiB")
	out, errOut, err := agentResult(t, nil, "pull", "--api", d.Socket, cid)
	if err == nil {
		t.Fatalf("pull into a 20 MiB cache exited 0:\n%s%s", out, errOut)
	}
	if code := err.(*exec.ExitError).Sys().(syscall.WaitStatus).ExitStatus(); code != 1 {
		t.Errorf("pull exited %d, want 1", code)
	}
	if !strings.Contains(errOut, "cannot keep the flist") || !strings.Contains(errOut, "--cache-max") || strings.Contains(out, cid) {
		t.Errorf("pull's output does not say the cache is too small:\nstdout: %s\nstderr: %s", out, errOut)
	}
	st := d.status(t)
	if len(st.Pinned) != 0 {
		t.Errorf("pinned after a failed pull: %v", st.Pinned)
	}
	if st.Cache.Bytes > 20<<20 {
		t.Errorf("the cache holds %d bytes, more than its 20 MiB", st.Cache.Bytes)
	}
}

// fillDisk writes a file in dir until its filesystem is full; the returned func frees it.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			break
		}
	}
	// The last partial pages too: a one-byte write must fail.
	for n := 1; n > 0; {
		n, _ = f.Write(buf[:1])
	}
	return func() { os.Remove(p) }
}

// TestUmountFullDisk (issue 13, 6): an umount whose state file cannot be written (the
// data disk is full) fails, and then the mount is still there and still listed, so that
// what the daemon says, what is mounted and what the next start restores agree. No
// temporary file is left. With space again, the umount works.
func TestUmountFullDisk(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	cid := pushHello(t, h)
	data := tmpfsDir(t, "16m")
	d := runDaemon(t, "--hub", h.URL, "--data", data)
	mp := d.mountFlist(t, cid)
	free := fillDisk(t, data)

	_, errOut, err := agentResult(t, nil, "umount", "--api", d.Socket, mp)
	if err == nil {
		t.Fatal("umount with a full data disk exited 0")
	}
	if !strings.Contains(errOut, "still mounted") {
		t.Errorf("umount's error does not say the mount stays: %s", errOut)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "hello")); err != nil || string(got) != "hello" {
		t.Errorf("the mount after a failed umount: %q, %v", got, err)
	}
	if st := d.status(t); len(st.Mounts) != 1 {
		t.Errorf("mounts after a failed umount: %v", st.Mounts)
	}
	state := filepath.Join(data, "state", "mounts.json")
	if saved, err := os.ReadFile(state); err != nil || !strings.Contains(string(saved), mp) {
		t.Errorf("the state file after a failed umount: %s, %v", saved, err)
	}
	if _, err := os.Stat(state + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a temporary state file is left: %v", err)
	}

	free()
	d.cli(t, "umount", mp)
	if ok, _ := isMounted(mp); ok {
		t.Error("still mounted after umount with space again")
	}
	if saved, err := os.ReadFile(state); err != nil || strings.Contains(string(saved), mp) {
		t.Errorf("the state file after umount: %s, %v", saved, err)
	}
}

// isMounted reports whether something is mounted at dir (per /proc/self/mountinfo).
func isMounted(dir string) (bool, error) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true, nil
		}
	}
	return false, nil
}

// TestVersion (issue 13, 12): --version names the build: version, commit, Go toolchain.
func TestVersion(t *testing.T) {
	out := agent(t, "--version")
	if !strings.HasPrefix(out, "zosfs-agent ") || !strings.Contains(out, "(commit ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("--version printed %q", out)
	}
}

// zosfsMounts counts the zosfs mounts in the mount table.
func zosfsMounts(t *testing.T) int {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(info), " - fuse.zosfs ")
}

// TestMountRefusesSystemPaths (issue 13, 8): the daemon refuses to mount at "/", on the
// kernel's filesystems and over directories that are not empty (unless --force), and a
// refusal leaves no mount behind.
func TestMountRefusesSystemPaths(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	cid := pushHello(t, h)
	d := runDaemon(t, "--hub", h.URL)
	before := zosfsMounts(t)
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "mine"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mountpoints = append(d.mountpoints, full)
	for _, mp := range []string{"/", "/etc", "/usr", "/proc", "/sys/kernel", full} {
		_, errOut, err := agentResult(t, nil, "mount", "--api", d.Socket, cid, mp)
		if err == nil {
			t.Errorf("mount at %s succeeded", mp)
			syscall.Unmount(mp, syscall.MNT_DETACH)
			continue
		}
		if !strings.Contains(errOut, "refused mountpoint") {
			t.Errorf("mount at %s: %s", mp, errOut)
		}
	}
	if n := zosfsMounts(t); n != before {
		t.Fatalf("%d zosfs mounts after the refusals, %d before", n, before)
	}
	d.cli(t, "mount", "--force", cid, full)
	if got, err := os.ReadFile(filepath.Join(full, "hello")); err != nil || string(got) != "hello" {
		t.Errorf("mount --force over a directory that is not empty: %q, %v", got, err)
	}
	d.cli(t, "umount", full)
	if got, err := os.ReadFile(filepath.Join(full, "mine")); err != nil || string(got) != "mine" {
		t.Errorf("the directory's own file after umount: %q, %v", got, err)
	}
}

// TestMountFullDisk (issue 13, 12): a mount whose flist cannot be stored because the
// data disk is full says so, instead of "not found".
func TestMountFullDisk(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	cid := pushHello(t, h)
	data := tmpfsDir(t, "16m")
	d := runDaemon(t, "--hub", h.URL, "--data", data)
	fillDisk(t, data)
	mp := t.TempDir()
	d.mountpoints = append(d.mountpoints, mp)
	_, errOut, err := agentResult(t, nil, "mount", "--api", d.Socket, cid, mp)
	if err == nil {
		t.Fatal("mount with a full data disk succeeded")
	}
	if !strings.Contains(errOut, "disk is full") || strings.Contains(errOut, "not found: flist") {
		t.Errorf("mount on a full disk: %s", errOut)
	}
}

// TestRestartFullDisk (issue 13, 7): a daemon restarted on a full data disk comes up,
// with its cache read-only: its mounts are restored and read what the cache holds.
func TestRestartFullDisk(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	src := t.TempDir()
	writeRandomFile(t, filepath.Join(src, "data"), 3<<20, 7)
	cid := lastLine(agent(t, "push", "--hub", h.URL, src))
	data := tmpfsDir(t, "32m")
	d := runDaemon(t, "--hub", h.URL, "--data", data)
	mp := d.mountFlist(t, cid)
	want := fileHash(t, filepath.Join(src, "data"))
	if got := fileHash(t, filepath.Join(mp, "data")); got != want {
		t.Fatalf("the file through the mount: %s, want %s", got, want)
	}
	d.cmd.Process.Kill() // kill -9, by pid
	<-d.exited
	fillDisk(t, data)

	d.restart()
	h.stop(syscall.SIGTERM) // what the mount reads now comes from the cache
	st := d.status(t)
	if !st.Cache.ReadOnly || len(st.Mounts) != 1 {
		t.Errorf("status after a restart on a full disk: cache %+v, mounts %v", st.Cache, st.Mounts)
	}
	if got := fileHash(t, filepath.Join(mp, "data")); got != want {
		t.Errorf("the file after a restart on a full disk: %s, want %s", got, want)
	}
}

// TestKillLoop (issue 13): 20 times, a pull of a 60 MiB flist is started and the daemon
// killed (kill -9) at a random moment, then started again. Every time the mount comes
// back, every cached block hashes to its id, and a filesystem of someone else's is left
// as it was; at the end every pull completes and the mount reads the whole tree. Each
// round fetches a few MiB (the uplink's bound, and its one-block burst at each start),
// so four flists take five rounds each and every round kills a pull in its middle.
func TestKillLoop(t *testing.T) {
	testkit.NeedFUSE(t)
	h := runHub(t)
	const flists, roundsEach = 4, 5
	var srcs, cids []string
	for i := range flists {
		src := t.TempDir()
		if out, err := exec.Command("go", "run", "../internal/tools/gentree", "-size", "60MiB", "-seed", strconv.Itoa(20+i), src).CombinedOutput(); err != nil {
			t.Fatalf("gentree: %v\n%s", err, out)
		}
		srcs, cids = append(srcs, src), append(cids, lastLine(agent(t, "push", "--hub", h.URL, src)))
	}
	d := runDaemon(t, "--hub", h.URL, "--hub-rate", "4MiB")
	mp := d.mountFlist(t, cids[0])
	foreign := t.TempDir()
	testTmpfs(t, foreign)

	rng := rand.New(rand.NewPCG(13, 20))
	interrupted := 0
	for i := range flists * roundsEach {
		pull := exec.Command(binary, "pull", "--api", d.Socket, cids[i/roundsEach])
		if err := pull.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100*time.Millisecond + time.Duration(rng.Int64N(int64(600*time.Millisecond))))
		d.cmd.Process.Kill() // kill -9, by pid
		<-d.exited
		if err := pull.Wait(); err != nil {
			interrupted++
		}
		d.restart()
		if entries, err := os.ReadDir(mp); err != nil || len(entries) == 0 {
			t.Fatalf("round %d: after restart the mount lists %d entries: %v", i, len(entries), err)
		}
		d.checkCache(t)
		if !isTmpfs(t, foreign) {
			t.Fatalf("round %d: the foreign tmpfs was touched", i)
		}
		if t.Failed() {
			t.Fatalf("round %d failed", i)
		}
	}
	if interrupted < flists*roundsEach*3/4 {
		t.Errorf("only %d of %d pulls were interrupted by the kill: the loop proves little", interrupted, flists*roundsEach)
	}
	t.Logf("%d of %d pulls interrupted by the kill", interrupted, flists*roundsEach)
	for _, cid := range cids {
		if out := d.cli(t, "pull", cid); lastLine(out) != cid {
			t.Errorf("the last pull of %s printed %q", cid, out)
		}
	}
	if st := d.status(t); len(st.Pinned) != flists || len(st.Mounts) != 1 {
		t.Errorf("after the loop: pinned %v, mounts %v", st.Pinned, st.Mounts)
	}
	if n := d.checkCache(t); n == 0 {
		t.Error("no block in the cache after the last pulls")
	}
	diffTrees(t, srcs[0], mp)
}
