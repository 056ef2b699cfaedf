// Package mount serves an flist as a read-only FUSE filesystem (hanwen/go-fuse v2, mounted
// directly with mount(2) as root, no fusermount needed), optionally under a kernel overlayfs
// that makes it writable.
//
// The whole tree is visible at once: every entry of the flist, with its mode (setuid,
// setgid and sticky bits included), owner, size, mtime, device number and symlink target,
// under the flist's own inode numbers. A file's content is fetched only when it is read,
// block by block, from the BlockGetter the mount is handed (the agent's resolver: cache,
// then neighbours, then the hub). Content never changes, so the kernel is told to cache
// entries, attributes and pages for a long time.
//
// Attributes: mode (type and all 12 permission bits), uid, gid, size (0 for directories,
// the target's length for symlinks), mtime (atime and ctime are the mtime too), st_blocks
// = ceil(size/512), rdev for devices, and the flist's inode numbers as st_ino (stable
// across mounts). nlink is 1 for everything but directories, which have 2 + their
// subdirectories, as on a disk (an flist has no hard links: each path is its own entry).
// statfs reports a full, read-only filesystem: blocks = the total size of all files in
// 4 KiB units, files = the number of entries, nothing free; the totals are counted once
// (one query for a v2 flist, a walk otherwise), in the background, on the first statfs
// (zero until done).
//
// Reads: a read fetches only the blocks it touches and checks their lengths against the
// file's size (a block of the wrong length is an I/O error, never garbage). Each file's
// reader (its read state, shared by everyone reading it) watches the file's access
// pattern; once reads look sequential it keeps a window of Config.Prefetch future blocks
// in flight, in parallel, on a context bounded by the reader's lifetime (until it is
// evicted as one of too many idle readers, or the mount stops). Every read is bounded
// by Config.ReadTimeout: a read that cannot be served in time fails with EIO, and a read
// interrupted by the kernel (the reader got a signal) fails with EINTR; the request's
// context reaches the BlockGetter.
//
// Writable mounts: the FUSE filesystem is mounted at a private directory and a kernel
// overlayfs (lowerdir = the FUSE mount, upperdir = Config.UpperDir or a temporary directory)
// is mounted at the mountpoint; writes land in the upper directory, the flist and its
// blocks are never touched.
//
// Both the FUSE mount (read-only) and the overlay are nosuid and nodev: an image fetched
// over the network gets no setuid execution and no device access on the host (the bits
// and device numbers are still shown as they are).
//
// Bad flist content (flist.ErrCorrupt from the reader) turns into EIO for the operation
// that met it, and is logged; it never panics.
//
// The package never imports the network or store packages: it declares the one interface
// it needs, BlockGetter.
package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/zosfs/zosfs-agent/flist"
)

// BlockGetter returns the plain (decoded, verified) content of a block. ctx is the FUSE
// request's context: cancelled when the kernel interrupts the read. For read-ahead it is
// the context of the file's reader, done when the reader is evicted or the mount stops.
// Implementations must be safe for concurrent use and should return promptly once ctx
// is done; the mount does not wait for one that does not (the read fails at its
// deadline either way).
type BlockGetter interface {
	GetBlock(ctx context.Context, b flist.Block) ([]byte, error)
}

// Tuning. The defaults of the Config fields that have one are named here.
const (
	// DefaultReadTimeout bounds one read(2) request: fetching every block it touches,
	// through cache, peers and hub. Generous, because a cold block may come over a thin
	// uplink; small enough that a reader is never stuck for good.
	DefaultReadTimeout = 60 * time.Second

	// DefaultPrefetch is how many blocks past the current read position a sequential
	// reader keeps in flight or decoded: 8 blocks of 512 KiB = 4 MiB, enough to hide a
	// few round trips to a neighbour at LAN speed.
	DefaultPrefetch = 8

	// DefaultPrefetchMemory bounds the decoded block bytes all files being read on one mount
	// hold in their read-ahead windows; beyond it read-ahead pauses (reads still work).
	DefaultPrefetchMemory = 256 << 20

	// cacheTimeout is how long the kernel may keep entries, attributes and negative
	// lookups: the content of an flist never changes, so as long as the kernel likes.
	cacheTimeout = 24 * time.Hour

	// maxRead is the largest read request the kernel sends (FUSE max_read / max_pages):
	// fewer, larger requests for sequential readers.
	maxRead = 1 << 20

	// attrBlksize is the st_blksize reported for every entry.
	attrBlksize = 4096

	// unmountTries is how often Run tries a plain unmount (5 ms, 10 ms, ... apart)
	// before it detaches a busy mount lazily.
	unmountTries = 6

	// unmountGrace is how long Run waits for the FUSE server to stop after a lazy
	// (detached) unmount, when files are still open on it (the server then serves them,
	// failing their reads, until they are closed), and for block fetches to end.
	unmountGrace = 2 * time.Second

	// watchPoll is how often the watcher of a writable mount's overlay looks at the
	// mount table even if the kernel did not signal a change, and notices Run ending.
	watchPoll = time.Second

	// fsType is the FUSE subtype: mounts show as "fuse.zosfs" in /proc/self/mountinfo,
	// which is how Unmount recognizes its own lower mounts.
	fsType = "zosfs"
)

// Config describes one mount. Flist, Blocks and Mountpoint are required; every other
// field has a documented zero-value default.
type Config struct {
	// Flist is the flist to serve. The mount does not close it: the caller does, after
	// Run has returned.
	Flist flist.Flist
	// Blocks gives the plain content of blocks.
	Blocks BlockGetter
	// Mountpoint is an existing directory where the filesystem appears.
	Mountpoint string

	// Name is the mount's source as shown by mount(8) and df (e.g. the flist's CID).
	// Default "zosfs".
	Name string

	// ReadTimeout bounds every read request; one that cannot be served in time fails
	// with EIO. Default DefaultReadTimeout (60s).
	ReadTimeout time.Duration
	// Prefetch is the read-ahead window of a sequential reader, in blocks. 0 means
	// DefaultPrefetch (8 = 4 MiB); negative disables read-ahead.
	Prefetch int
	// PrefetchMemory bounds, in bytes, the decoded blocks held by all files being read on the
	// mount; read-ahead pauses while it is reached. 0 means DefaultPrefetchMemory.
	PrefetchMemory int64

	// Writable puts a kernel overlayfs on top of the flist (mount --rw): writes go to
	// UpperDir, the flist is never changed.
	Writable bool
	// UpperDir receives the changes of a writable mount; it is created if missing and
	// kept on exit. The overlay's work directory is created next to it (same filesystem)
	// as ".<name>.zosfs-work" and removed on exit. Empty means a temporary directory
	// under WorkDir, removed on exit (changes are lost). Ignored unless Writable.
	UpperDir string
	// WorkDir holds the private directory of a writable mount (where the FUSE filesystem
	// is mounted under the overlay) and the temporary upper directory. Default
	// os.TempDir(). Ignored unless Writable.
	WorkDir string

	// OwnerOnly restricts access to the user who mounted (no allow_other). By default
	// every user may access the mount, subject to the permission bits of the entries
	// (the kernel checks them: default_permissions).
	OwnerOnly bool

	// Logger receives the mount's logs (with component=mount). Default slog.Default().
	Logger *slog.Logger
	// Debug logs every FUSE request (very verbose).
	Debug bool
}

// ErrUnmountedExternally is returned by Run when the filesystem was unmounted by
// someone else (e.g. umount(8)) rather than by cancelling Run's context.
var ErrUnmountedExternally = errors.New("mount: unmounted from outside")

// Mount is one flist mount. Create it with New, serve it with Run.
type Mount struct {
	cfg     Config
	log     *slog.Logger
	ready   chan struct{}
	started atomic.Bool

	// Set by Run before the filesystem is served; read-only afterwards.
	runCtx   context.Context
	lowerDir string

	// prefetchBytes counts the decoded block bytes held by all file readers.
	prefetchBytes atomic.Int64
	readers       readers
	// noOpen: the kernel supports filesystems without OPEN (set once mounted).
	noOpen atomic.Bool
	// active counts the goroutines that use the flist or the block getter outside a
	// FUSE request (block fetches, the statfs walk); Run waits for them before it
	// returns, so that the caller may close both.
	active atomic.Int64

	statfsOnce sync.Once
	statfsDone chan struct{}
	statfs     fuse.StatfsOut
}

// New checks cfg and returns a Mount ready to Run. It starts and mounts nothing.
func New(cfg Config) (*Mount, error) {
	if cfg.Flist == nil {
		return nil, errors.New("mount: no flist")
	}
	if cfg.Blocks == nil {
		return nil, errors.New("mount: no block getter")
	}
	if cfg.Mountpoint == "" {
		return nil, errors.New("mount: no mountpoint")
	}
	mp, err := filepath.Abs(cfg.Mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	cfg.Mountpoint = mp
	if cfg.Name == "" {
		cfg.Name = fsType
	}
	if strings.ContainsAny(cfg.Name, ", \t\n\\") {
		return nil, fmt.Errorf("mount: name %q may not contain commas, spaces or backslashes", cfg.Name)
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = DefaultPrefetch
	} else if cfg.Prefetch < 0 {
		cfg.Prefetch = 0
	}
	if cfg.PrefetchMemory <= 0 {
		cfg.PrefetchMemory = DefaultPrefetchMemory
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Writable {
		if cfg.WorkDir == "" {
			cfg.WorkDir = os.TempDir()
		}
		if cfg.WorkDir, err = filepath.Abs(cfg.WorkDir); err != nil {
			return nil, fmt.Errorf("mount: %w", err)
		}
		if cfg.UpperDir != "" {
			if cfg.UpperDir, err = filepath.Abs(cfg.UpperDir); err != nil {
				return nil, fmt.Errorf("mount: %w", err)
			}
		}
		// overlayfs options are a comma-separated list of key=value, lowerdir a
		// colon-separated list: refuse paths that would need escaping.
		for _, p := range []string{cfg.Mountpoint, cfg.UpperDir, cfg.WorkDir} {
			if strings.ContainsAny(p, ",:\\\n") {
				return nil, fmt.Errorf("mount: path %q of a writable mount may not contain ',', ':', '\\' or a newline", p)
			}
		}
	}
	return &Mount{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "mount", "mountpoint", cfg.Mountpoint),
		ready:      make(chan struct{}),
		statfsDone: make(chan struct{}),
	}, nil
}

// Mountpoint returns the absolute mountpoint.
func (m *Mount) Mountpoint() string { return m.cfg.Mountpoint }

// LowerDir returns where the FUSE filesystem itself is mounted: the mountpoint for a
// read-only mount, a private directory under the overlay for a writable one. Valid once
// Ready is closed.
func (m *Mount) LowerDir() string {
	select {
	case <-m.ready:
		return m.lowerDir
	default:
		return ""
	}
}

// Ready returns a channel closed once the filesystem (and the overlay of a writable
// mount) is in place and served. It is never closed if Run fails before that, so wait
// for Run's return as well.
func (m *Mount) Ready() <-chan struct{} { return m.ready }

// Run mounts the filesystem, serves it until ctx is done, then unmounts it and returns
// nil (or ErrUnmountedExternally if it was unmounted by someone else first). What it
// set up it tears down in reverse order: the overlay, the FUSE mount, the directories
// it created. If files are still open on the mount, the unmount is lazy (detached) and
// Run waits at most a few seconds for the server to stop. Run may be called once.
func (m *Mount) Run(ctx context.Context) error {
	root, err := m.checkStart(ctx)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	m.runCtx = runCtx

	var undo teardown
	defer undo.run()
	undo.push(func() {
		stop()
		m.waitIdle()
	})

	m.lowerDir = m.cfg.Mountpoint
	var dirs overlayDirs
	if m.cfg.Writable {
		if dirs, err = m.prepareDirs(&undo); err != nil {
			return err
		}
	}
	lower, err := m.serveFUSE(root, &undo)
	if err != nil {
		return err
	}
	if m.cfg.Writable {
		if err := m.mountOverlay(dirs, &undo); err != nil {
			return err
		}
	} else {
		m.log.Info("mounted", "writable", false)
	}
	close(m.ready)
	return m.waitEnd(ctx, runCtx, lower)
}

// teardown collects the undo steps of what Run set up, in the order it set it up.
type teardown []func()

// push adds the step that undoes what was just set up.
func (t *teardown) push(undo func()) { *t = append(*t, undo) }

// run runs the steps in reverse order. A pointer receiver, so that a deferred run sees
// the steps pushed after the defer.
func (t *teardown) run() {
	for i := len(*t) - 1; i >= 0; i-- {
		(*t)[i]()
	}
}

// checkStart checks that Run may start (first call, ctx not done, a root directory, an
// existing mountpoint directory) and returns the flist's root.
func (m *Mount) checkStart(ctx context.Context) (flist.Entry, error) {
	if !m.started.CompareAndSwap(false, true) {
		return flist.Entry{}, errors.New("mount: Run called twice")
	}
	if err := ctx.Err(); err != nil {
		return flist.Entry{}, err
	}
	root, err := m.cfg.Flist.Get(ctx, flist.RootIno)
	if err != nil {
		return flist.Entry{}, fmt.Errorf("mount: root of the flist: %w", err)
	}
	if root.Type != flist.TypeDir {
		return flist.Entry{}, fmt.Errorf("mount: %w: the root is not a directory", flist.ErrCorrupt)
	}
	if fi, err := os.Stat(m.cfg.Mountpoint); err != nil {
		return flist.Entry{}, fmt.Errorf("mount: %w", err)
	} else if !fi.IsDir() {
		return flist.Entry{}, fmt.Errorf("mount: %s is not a directory", m.cfg.Mountpoint)
	}
	return root, nil
}

// overlayDirs are the upper and work directories of a writable mount's overlay.
type overlayDirs struct{ upper, work string }

// prepareDirs creates the directories of a writable mount: a private state directory
// under WorkDir holding the lower directory (m.lowerDir, where the FUSE filesystem goes)
// and, without UpperDir, the upper and work directories; with UpperDir, UpperDir (kept)
// and a work directory next to it. What it creates but UpperDir is removed on undo.
func (m *Mount) prepareDirs(undo *teardown) (overlayDirs, error) {
	var d overlayDirs
	state, err := os.MkdirTemp(m.cfg.WorkDir, "zosfs-mount-")
	if err != nil {
		return d, fmt.Errorf("mount: %w", err)
	}
	undo.push(func() { m.removeAll(state) })
	m.lowerDir = filepath.Join(state, "lower")
	if err := os.Mkdir(m.lowerDir, 0o700); err != nil {
		return d, fmt.Errorf("mount: %w", err)
	}
	if m.cfg.UpperDir == "" {
		d.upper, d.work = filepath.Join(state, "upper"), filepath.Join(state, "work")
		if err := os.Mkdir(d.upper, 0o755); err != nil {
			return d, fmt.Errorf("mount: %w", err)
		}
	} else {
		d.upper = m.cfg.UpperDir
		d.work = filepath.Join(filepath.Dir(d.upper), "."+filepath.Base(d.upper)+".zosfs-work")
		if err := os.MkdirAll(d.upper, 0o755); err != nil {
			return d, fmt.Errorf("mount: upper directory: %w", err)
		}
		undo.push(func() { m.removeAll(d.work) })
	}
	// overlayfs itself clears what a killed mount may have left in it.
	if err := os.MkdirAll(d.work, 0o700); err != nil {
		return d, fmt.Errorf("mount: %w", err)
	}
	return d, nil
}

// lowerMount is the FUSE filesystem Run serves at m.lowerDir.
type lowerMount struct {
	// served is closed when the server stops: the kernel ended the connection.
	served chan struct{}
	// mounted is cleared when it was unmounted from outside: teardown leaves it.
	mounted bool
}

// serveFUSE mounts the FUSE filesystem at m.lowerDir and serves it; undo unmounts it
// unless it was unmounted from outside.
func (m *Mount) serveFUSE(root flist.Entry, undo *teardown) (*lowerMount, error) {
	server, err := m.mountFUSE(root)
	if err != nil {
		return nil, err
	}
	lower := &lowerMount{served: make(chan struct{}), mounted: true}
	go func() {
		server.Wait()
		close(lower.served)
	}()
	undo.push(func() {
		if lower.mounted {
			m.unmountFUSE(lower.served)
		}
	})
	return lower, nil
}

// mountOverlay mounts the overlay of a writable mount at the mountpoint, over the FUSE
// filesystem at m.lowerDir; undo unmounts it.
func (m *Mount) mountOverlay(d overlayDirs, undo *teardown) error {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", m.lowerDir, d.upper, d.work)
	if err := unix.Mount("overlay", m.cfg.Mountpoint, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount: overlay on %s (%s): %w", m.cfg.Mountpoint, opts, err)
	}
	undo.push(func() {
		if err := unmountOne(m.cfg.Mountpoint); err != nil {
			m.log.Error("unmounting the overlay", "err", err)
		}
	})
	m.log.Info("mounted", "writable", true, "upper", d.upper, "lower", m.lowerDir)
	return nil
}

// waitEnd waits for the end of the mount: ctx done (nil), or the FUSE filesystem or the
// overlay unmounted from outside (ErrUnmountedExternally). The overlay is watched on
// runCtx.
func (m *Mount) waitEnd(ctx, runCtx context.Context, lower *lowerMount) error {
	var overlayGone <-chan struct{}
	if m.cfg.Writable {
		overlayGone = watchUnmount(runCtx, m.cfg.Mountpoint)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-lower.served:
		lower.mounted = false
		m.log.Warn("the filesystem was unmounted from outside")
		return ErrUnmountedExternally
	case <-overlayGone:
		m.log.Warn("the overlay was unmounted from outside")
		return ErrUnmountedExternally
	}
}

// watchUnmount returns a channel closed when nothing is mounted at path any more. It
// re-reads the mount table when the kernel says it changed (POLLPRI on
// /proc/self/mountinfo) and, since that signal can come just before the change shows,
// also every watchPoll; it stops watching when ctx is done.
func watchUnmount(ctx context.Context, path string) <-chan struct{} {
	gone := make(chan struct{})
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return gone // cannot watch: never reports
	}
	go func() {
		defer f.Close()
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
		for ctx.Err() == nil {
			if ok, err := IsMountpoint(path); err == nil && !ok {
				close(gone)
				return
			}
			if _, err := unix.Poll(fds, int(watchPoll/time.Millisecond)); err != nil && !errors.Is(err, syscall.EINTR) {
				return
			}
		}
	}()
	return gone
}

// mountFUSE mounts the read-only FUSE filesystem at m.lowerDir and starts serving it.
func (m *Mount) mountFUSE(root flist.Entry) (*fuse.Server, error) {
	timeout := cacheTimeout
	// go-fuse's request traces (Debug) and its diagnostics.
	traceLog := slog.NewLogLogger(m.log.Handler(), slog.LevelInfo)
	diagLog := slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			// The mount's source, as mount(8) and df show it.
			FsName: m.cfg.Name,
			// The subtype: "fuse.zosfs" in the mount table, how Unmount recognizes
			// its own lower mounts.
			Name: fsType,
			// mount(2) directly, as root: no fusermount needed.
			DirectMount: true,
			// Read-only, and no setuid or device nodes from an image fetched over the
			// network.
			DirectMountFlags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV,
			// "ro" shows the mount read-only in the mount table; default_permissions
			// has the kernel check the entries' permission bits (there is no Access
			// handler).
			Options: []string{"ro", "default_permissions"},
			// Every user may read the mount, unless Config.OwnerOnly.
			AllowOther: !m.cfg.OwnerOnly,
			// go-fuse derives max_read and max_pages from it: read requests of up to
			// maxRead, fewer and larger for sequential readers.
			MaxWrite: maxRead,
			// flists carry no extended attributes: spare the round trips.
			DisableXAttrs: true,
			// Symlink targets never change: the kernel may keep them.
			EnableSymlinkCaching: true,
			// Every request traced to the mount's log (Config.Debug).
			Debug:  m.cfg.Debug,
			Logger: traceLog,
			// A bug in a handler fails its operation with EIO, logged, instead of
			// taking the daemon down.
			PanicHandler: func(v any) fuse.Status {
				m.log.Error("panic in a filesystem operation", "panic", fmt.Sprint(v))
				return fuse.EIO
			},
		},
		// Entries, attributes and failed lookups never change: cached for long.
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// Modes are the flist's, even 0000.
		NullPermissions: true,
		// The root has the flist's root inode number, stable across mounts.
		RootStableAttr: &fs.StableAttr{Ino: flist.RootIno},
		// go-fuse's diagnostics (what it cannot return as an error) as warnings.
		Logger: diagLog,
	}
	server, err := fs.Mount(m.lowerDir, m.newNode(root), opts)
	if err != nil {
		return nil, fmt.Errorf("mount: FUSE on %s: %w", m.lowerDir, err)
	}
	m.noOpen.Store(server.KernelSettings().Flags&fuse.CAP_NO_OPEN_SUPPORT != 0)
	return server, nil
}

// unmountFUSE unmounts the FUSE filesystem and waits for its server to stop (the kernel
// ends the connection once the mount is gone). When the kernel refuses (files still
// open), it detaches the mount lazily, aborts the connection if the fuse control
// filesystem is mounted, and waits at most unmountGrace.
func (m *Mount) unmountFUSE(served <-chan struct{}) {
	dev, devErr := deviceOf(m.lowerDir)
	// The kernel may still be releasing files just closed: retry a busy unmount a few
	// times before detaching it.
	var err error
	delay := 5 * time.Millisecond
	for try := 0; try < unmountTries; try++ {
		if err = unix.Unmount(m.lowerDir, 0); !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(delay)
		delay *= 2
	}
	if err != nil && !notMounted(err) {
		m.log.Warn("filesystem busy: detaching it lazily", "dir", m.lowerDir, "err", err)
		if err := unix.Unmount(m.lowerDir, unix.MNT_DETACH); err != nil && !notMounted(err) {
			m.log.Error("detaching the filesystem", "dir", m.lowerDir, "err", err)
		}
		if devErr == nil {
			abortConnection(dev)
		}
	}
	select {
	case <-served:
	case <-time.After(unmountGrace):
		m.log.Error("the FUSE server did not stop after unmount; leaving it", "dir", m.lowerDir)
	}
	m.log.Info("unmounted")
}

// waitIdle waits, at most unmountGrace, for the goroutines counted in m.active (whose
// contexts are cancelled by now) to end.
func (m *Mount) waitIdle() {
	deadline := time.Now().Add(unmountGrace)
	for m.active.Load() > 0 {
		if time.Now().After(deadline) {
			m.log.Error("block fetches still running after unmount; leaving them", "count", m.active.Load())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// removeAll removes a directory the mount created, unless something is still mounted
// on it (then it is left, and logged).
func (m *Mount) removeAll(dir string) {
	if busy, _ := mountedUnder(dir); busy {
		m.log.Error("not removing a directory that still has a mount", "dir", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		m.log.Warn("removing a directory", "dir", dir, "err", err)
	}
}

// deviceOf returns the device number of the filesystem mounted at dir.
func deviceOf(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, err
	}
	return st.Dev, nil
}

// abortConnection aborts the FUSE connection of device dev through the fuse control
// filesystem, when it is mounted: requests in flight and to come fail with ENOTCONN
// and the server's loop ends.
func abortConnection(dev uint64) {
	// The connection directory is named by the kernel's dev_t: major<<20 | minor.
	name := fmt.Sprint(uint64(unix.Major(dev))<<20 | uint64(unix.Minor(dev)))
	f, err := os.OpenFile(filepath.Join("/sys/fs/fuse/connections", name, "abort"), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString("1")
}

// notMounted reports an umount2 error that means there was nothing to unmount.
func notMounted(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT)
}
