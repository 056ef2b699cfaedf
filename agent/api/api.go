// Package api is the daemon's local API: HTTP/JSON over a unix socket. It holds the wire
// types, the server's handler (over a Backend the daemon implements) and the typed client
// the CLI uses. It imports nothing else of the project.
package api

import "context"

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/zosfs/agent.sock"

// MountRequest asks the daemon to mount an flist.
type MountRequest struct {
	// Ref names the flist: a CID, a path on the daemon's host, an http(s) URL, or
	// USER/NAME on the configured hub.
	Ref        string `json:"ref"`
	Mountpoint string `json:"mountpoint"`
	// Writable puts a kernel overlayfs on top; changes land in UpperDir (a temporary
	// directory when empty).
	Writable bool   `json:"rw,omitempty"`
	UpperDir string `json:"upper,omitempty"`
	// Force mounts over a directory that is not empty, hiding its files.
	Force bool `json:"force,omitempty"`
}

// Mount is one mount of the daemon.
type Mount struct {
	CID        string `json:"cid"`
	Mountpoint string `json:"mountpoint"`
	Ref        string `json:"ref,omitempty"`
	Writable   bool   `json:"rw,omitempty"`
	UpperDir   string `json:"upper,omitempty"`
	Force      bool   `json:"force,omitempty"`
}

// Status is the daemon's state (`zosfs-agent status --json`).
type Status struct {
	PeerID  string      `json:"peer_id"`
	Addrs   []string    `json:"addrs"`
	Peers   []Peer      `json:"peers"`
	Mounts  []Mount     `json:"mounts"`
	Pinned  []string    `json:"pinned"`
	Cache   CacheStatus `json:"cache"`
	Fetched Fetched     `json:"fetched"`
	Served  Served      `json:"served"`
	// Rejected counts blocks from neighbours that did not match their id; each one got
	// its sender banned. Banned is the number of neighbours banned now.
	Rejected int64    `json:"rejected"`
	Banned   int      `json:"banned"`
	Hubs     []string `json:"hubs"`
}

// Peer is a connected neighbour.
type Peer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs,omitempty"`
}

// CacheStatus is the block cache's use.
type CacheStatus struct {
	Bytes  int64 `json:"bytes"`
	Max    int64 `json:"max"` // the bound in force; 0: none
	Blocks int64 `json:"blocks"`
	// MinFree is the free space kept on the cache's disk; DiskFree what is free now.
	MinFree  int64 `json:"min_free"`
	DiskFree int64 `json:"disk_free"`
	// ReadOnly: the disk was full when the daemon started; the cache serves what it
	// holds and stores nothing new until the daemon is restarted with space.
	ReadOnly bool `json:"read_only,omitempty"`
}

// Fetched counts the bytes of blocks the daemon obtained, by source.
type Fetched struct {
	Cache int64 `json:"cache"`
	Peers int64 `json:"peers"`
	Hub   int64 `json:"hub"`
}

// Served counts what the daemon sent to neighbours.
type Served struct {
	Bytes  int64 `json:"bytes"`
	Blocks int64 `json:"blocks"`
	// FetchedFor counts the blocks (among Blocks) this daemon fetched for neighbours
	// as their designated fetcher (the first wave).
	FetchedFor int64 `json:"fetched_for"`
	// Flists counts the flist files sent to neighbours.
	Flists int64 `json:"flists"`
}

// PullRequest asks the daemon to fetch every block of an flist and pin it.
type PullRequest struct {
	Ref string `json:"ref"`
}

// PullProgress reports a pull; the server streams one per line, the last with Done.
type PullProgress struct {
	CID         string `json:"cid,omitempty"`
	Blocks      int64  `json:"blocks"`       // blocks in the cache so far
	TotalBlocks int64  `json:"total_blocks"` // distinct blocks of the flist
	Bytes       int64  `json:"bytes"`        // bytes fetched by this pull
	Done        bool   `json:"done,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Backend is what the server needs of the daemon.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Mount(ctx context.Context, req MountRequest) (Mount, error)
	Unmount(ctx context.Context, mountpoint string) error
	Pull(ctx context.Context, ref string, progress func(PullProgress)) (PullProgress, error)
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}
