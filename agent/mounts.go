package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/mount"
)

// mountManager runs the daemon's FUSE mounts and remembers them in a state file, so a
// restarted daemon clears what a killed one left and mounts them again.
type mountManager struct {
	d     *Daemon
	state string

	mu     sync.Mutex
	mounts map[string]*activeMount // by mountpoint
	// saveMu orders the writes of the state file, so that the last one written holds
	// the last list.
	saveMu sync.Mutex
}

type activeMount struct {
	info   api.Mount
	cancel context.CancelFunc
	done   chan struct{} // closed when the mount's Run has returned
	fl     flist.Flist
	// closeRoutes ends the use of the flist's routes (see openRoutes), unuse that of
	// its blocks (blocksInUse.useFlist) and its session with the flist's holders
	// (Daemon.joinFlist).
	closeRoutes, unuse func()
}

func newMountManager(d *Daemon, state string) *mountManager {
	return &mountManager{d: d, state: state, mounts: map[string]*activeMount{}}
}

func (m *mountManager) list() []api.Mount {
	return m.listExcept("")
}

// listExcept lists the mounts but the one at mountpoint skip.
func (m *mountManager) listExcept(skip string) []api.Mount {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Mount, 0, len(m.mounts))
	for mp, a := range m.mounts {
		if mp != skip {
			out = append(out, a.info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mountpoint < out[j].Mountpoint })
	return out
}

// mount resolves the reference, opens the flist and serves it at the mountpoint.
func (m *mountManager) mount(ctx context.Context, req api.MountRequest) (api.Mount, error) {
	if !filepath.IsAbs(req.Mountpoint) {
		return api.Mount{}, fmt.Errorf("%w: mountpoint %q must be an absolute path", api.ErrBadRequest, req.Mountpoint)
	}
	mp := filepath.Clean(req.Mountpoint)
	if req.UpperDir != "" && !filepath.IsAbs(req.UpperDir) {
		return api.Mount{}, fmt.Errorf("%w: upper dir %q must be an absolute path", api.ErrBadRequest, req.UpperDir)
	}
	if req.UpperDir != "" && !req.Writable {
		return api.Mount{}, fmt.Errorf("%w: an upper dir needs a writable (--rw) mount", api.ErrBadRequest)
	}
	if fi, err := os.Stat(mp); err != nil || !fi.IsDir() {
		return api.Mount{}, fmt.Errorf("%w: mountpoint %s is not a directory", api.ErrBadRequest, mp)
	}
	if err := mount.CheckMountpoint(mp, req.Force); err != nil {
		return api.Mount{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	m.mu.Lock()
	_, busy := m.mounts[mp]
	m.mu.Unlock()
	if busy {
		return api.Mount{}, fmt.Errorf("%w: %s is already mounted by this daemon", api.ErrConflict, mp)
	}
	c, err := m.d.flists.resolve(ctx, req.Ref)
	if err != nil {
		return api.Mount{}, err
	}
	info := api.Mount{CID: c.String(), Mountpoint: mp, Ref: req.Ref, Writable: req.Writable, UpperDir: req.UpperDir, Force: req.Force}
	if err := m.start(ctx, info); err != nil {
		return api.Mount{}, err
	}
	if err := m.save(); err != nil {
		m.d.log.Warn("saving the mount list failed", "err", err)
	}
	return info, nil
}

// start opens the flist of info and serves it, returning once the mount is live.
func (m *mountManager) start(ctx context.Context, info api.Mount) error {
	c, err := cid.Decode(info.CID)
	if err != nil {
		return err
	}
	fl, err := m.d.flists.open(ctx, c)
	if err != nil {
		return err
	}
	getter := flistGetter{r: m.d.resolver}
	routes, closeRoutes, err := m.d.openRoutes(ctx, fl)
	if err != nil {
		m.d.log.Warn("the flist's routes cannot be used; reading from the hubs only", "cid", info.CID, "err", err)
	} else if routes != nil {
		getter.routes = []Source{routes}
	}
	mnt, err := mount.New(mount.Config{
		Flist:       fl,
		Blocks:      getter,
		Mountpoint:  info.Mountpoint,
		Writable:    info.Writable,
		UpperDir:    info.UpperDir,
		ReadTimeout: m.d.cfg.ReadTimeout,
		Logger:      m.d.cfg.Logger,
	})
	if err != nil {
		fl.Close()
		closeRoutes()
		return err
	}
	unuse := m.d.resolver.inUse.useFlist(fl, func(err error) {
		m.d.log.Warn("listing the flist's blocks failed; neighbours will not get them through this node", "cid", info.CID, "err", err)
	})
	leave := m.d.joinFlist(c)
	a := &activeMount{info: info, done: make(chan struct{}), fl: fl, closeRoutes: closeRoutes,
		unuse: func() { unuse(); leave() }}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	runErr := make(chan error, 1)
	go func() {
		defer close(a.done)
		err := mnt.Run(runCtx)
		runErr <- err
		if err != nil {
			m.d.log.Error("mount stopped", "mountpoint", info.Mountpoint, "err", err)
		}
	}()
	select {
	case <-mnt.Ready():
	case err := <-runErr:
		cancel()
		a.close()
		if err == nil {
			err = errors.New("the mount ended at once")
		}
		return fmt.Errorf("mount %s at %s: %w", info.CID, info.Mountpoint, err)
	}
	m.mu.Lock()
	m.mounts[info.Mountpoint] = a
	m.mu.Unlock()
	m.d.log.Info("mounted", "cid", info.CID, "mountpoint", info.Mountpoint, "rw", info.Writable)
	return nil
}

func (a *activeMount) close() {
	a.unuse() // first: it reads fl
	a.fl.Close()
	a.closeRoutes()
}

// stop unmounts one mount and waits for it.
func (a *activeMount) stop() {
	a.cancel()
	<-a.done
	a.close()
}

// unmount removes the mount at mountpoint from the state file, then unmounts it. A
// state file that cannot be written (a full disk) keeps the mount as it is: unmounting
// it anyway would bring it back at the next start.
func (m *mountManager) unmount(ctx context.Context, mountpoint string) error {
	mp := filepath.Clean(mountpoint)
	m.saveMu.Lock()
	m.mu.Lock()
	a, ok := m.mounts[mp]
	m.mu.Unlock()
	if !ok {
		m.saveMu.Unlock()
		return fmt.Errorf("%w: %s is not mounted by this daemon", api.ErrNotFound, mp)
	}
	if err := m.writeState(m.listExcept(mp)); err != nil {
		m.saveMu.Unlock()
		return fmt.Errorf("%s is still mounted: the mount list cannot be saved without it: %w", mp, err)
	}
	m.mu.Lock()
	delete(m.mounts, mp)
	m.mu.Unlock()
	m.saveMu.Unlock()
	a.stop()
	m.d.log.Info("unmounted", "mountpoint", mp)
	return nil
}

// closeAll unmounts everything at daemon shutdown, keeping the state file so that the
// next start mounts them again.
func (m *mountManager) closeAll() {
	m.mu.Lock()
	all := m.mounts
	m.mounts = map[string]*activeMount{}
	m.mu.Unlock()
	for _, a := range all {
		a.stop()
	}
}

// restore clears the mounts a previous daemon left (stale if it was killed) and mounts
// them again. A mountpoint that now holds someone else's filesystem (mount.ErrForeign)
// is left as it is and not restored: mounting over it would hide its files.
func (m *mountManager) restore(ctx context.Context) {
	data, err := os.ReadFile(m.state)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var saved []api.Mount
	if err == nil {
		err = json.Unmarshal(data, &saved)
	}
	if err != nil {
		m.d.log.Error("the saved mount list is unreadable; no mount restored", "file", m.state, "err", err)
		return
	}
	for _, info := range saved {
		if err := mount.ClearStale(info.Mountpoint); err != nil {
			m.d.log.Error("not restoring a mount: its mountpoint is not ours to clear", "mountpoint", info.Mountpoint, "cid", info.CID, "err", err)
			continue
		}
		if err := mount.CheckMountpoint(info.Mountpoint, info.Force); err != nil {
			m.d.log.Error("not restoring a mount", "mountpoint", info.Mountpoint, "cid", info.CID, "err", err)
			continue
		}
		if err := m.start(ctx, info); err != nil {
			m.d.log.Error("restoring a mount failed", "mountpoint", info.Mountpoint, "cid", info.CID, "err", err)
			continue
		}
	}
	if err := m.save(); err != nil {
		m.d.log.Warn("saving the mount list failed", "err", err)
	}
}

// save writes the list of mounts.
func (m *mountManager) save() error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	return m.writeState(m.list())
}

// writeState replaces the state file with mounts, atomically and durably. On failure the
// old file stays and no temporary file is left behind.
func (m *mountManager) writeState(mounts []api.Mount) (err error) {
	data, err := json.MarshalIndent(mounts, "", "  ")
	if err != nil {
		return err
	}
	tmp := m.state + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, m.state)
}
