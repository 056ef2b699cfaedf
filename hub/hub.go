// Package hub is the zosfs hub — an HTTP server that holds the content blocks of flists and
// the flists themselves — and a typed client for it.
//
// # HTTP API
//
// Block ids are hex, 32 bytes (v2) or 16 bytes (legacy); CIDs are flist CIDs (CIDv1 raw,
// BLAKE2b-256 of the file). Names are USER/NAME, each part [A-Za-z0-9][A-Za-z0-9._-]*
// of at most 128 bytes; the users blocks, flists, names and health are reserved.
// Writes need "Authorization: Bearer TOKEN"; a hub without a token is read-only.
//
//	GET|HEAD /blocks/<hex[0:2]>/<hex>  a block: the rfs http-store layout, so a route
//	GET|HEAD /blocks/<hex>             http://HUB/blocks reads from the hub; flat fallback
//	PUT      /blocks/<hex[0:2]>/<hex>  store a block (token); the body must hash to the id
//	PUT      /blocks/<hex>
//	POST     /blocks/missing           {"ids": [hex, ...]} -> {"missing": [hex, ...]}, at most MaxMissingIDs ids
//	POST     /flists[?name=USER/NAME]  upload an flist (token) -> UploadResult
//	GET      /flists                   the listing: []FlistInfo, named flists first (by name),
//	                                   then each flist no name points at (name empty, by CID)
//	GET|HEAD /flists/<cid>             an flist's bytes
//	PUT      /names/USER/NAME          {"cid": CID}: point a name at an flist the hub holds (token)
//	GET      /names/USER/NAME          the name's FlistInfo
//	GET|HEAD /USER/NAME.fl             the named flist's bytes (0-hub style)
//	GET|HEAD /USER/NAME.fl.md5         the hex MD5 of that file, text/plain
//	GET      /health                   200 "ok"
//
// Refusals: malformed ids, CIDs, names, paths holding . or .. segments (also when
// percent-encoded), bodies that are not what they claim (a block that does not hash to its
// id, an upload that is not a readable flist) -> 400; no token -> 401; wrong token, or a
// write to a read-only hub -> 403; unknown -> 404; wrong method -> 405; a body that sends
// nothing for Config.BodyStallTimeout -> 408 (or the connection is closed); a body over its
// bound -> 413; more than Config.MaxBodiesPerClient bodies in flight from one address ->
// 429. A refused request writes nothing. Error bodies are one line of text/plain.
//
// # Storage
//
// Everything big is content-addressed in one BlockStore (a directory or an S3 bucket, wired
// by the caller): blocks under their id, and flist files cut into parts of Config.PartSize
// bytes, each part under its BLAKE2b-256 — so an flist that fits in one part (most do) is
// stored under its CID's digest, and every stored object hashes to its key. Two small JSON
// files in Config.Dir say what the hub holds: flists.json (CID -> size, MD5, part ids,
// upload time) and names.json (USER/NAME -> CID, time set). audit.jsonl keeps every
// accepted write (an flist stored; a name set, with the CID it pointed at before; the
// client; the time), appended and fsynced before the write is answered. Each JSON file is
// rewritten atomically (temporary file, fsync, rename, fsync of the directory) under a mutex. Uploads are spooled
// in Dir/tmp, which New empties. Before an flist is recorded, the store is synced if it can
// be (a Sync(ctx) error method), so the blocks pushed before an flist are durable once the
// flist is accepted.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
)

// ErrNotFound: the hub does not hold the block, flist or name. Client errors for a 404
// wrap it.
var ErrNotFound = flist.NotFound("not found")

// DefaultListen is the address Run listens on when Config.Listen is empty: loopback only,
// so that exposing a hub is a deliberate choice.
const DefaultListen = "127.0.0.1:8080"

// MaxBlockSize bounds a block PUT to the hub, in bytes. It equals the block stores' own
// limit (store.MaxBlockSize, flist.MaxBlockStored); real blocks are 512 KiB plus a little.
const MaxBlockSize = flist.MaxBlockStored

// DefaultMaxFlistSize bounds an uploaded flist when Config.MaxFlistSize is zero. Flists are
// metadata only: even an image of millions of files stays well below it.
const DefaultMaxFlistSize = 512 << 20

// DefaultPartSize is the size of the parts an flist file is stored as when Config.PartSize
// is zero: the largest object the block stores take (MaxBlockSize).
const DefaultPartSize = MaxBlockSize

// MaxMissingIDs bounds the ids of one POST /blocks/missing; Client.Missing batches.
const MaxMissingIDs = 10000

// Bounds of the small request bodies.
const (
	maxMissingBody = 1 << 20 // MaxMissingIDs hex ids of 32 bytes with JSON quoting fit in 700 KiB
	maxNameBody    = 4 << 10 // {"cid": "..."}
)

// missingWorkers bounds the concurrent Has calls of one /blocks/missing request: enough to
// hide an S3 round trip, few enough not to flood the store.
const missingWorkers = 16

// Server timeouts. Bodies get no overall read timeout: an flist upload over a thin uplink
// may take long. A body that stalls is cut (Config.BodyStallTimeout), and the request
// context ends when the client goes away.
const (
	readHeaderTimeout = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 10 * time.Second
)

// BlockStore holds blocks (and the parts of flist files) by id. store.Dir and store.S3
// satisfy it. Implementations are safe for concurrent use.
type BlockStore interface {
	// Get returns the block stored under id, or an error if it cannot (the hub asks Has
	// to tell a missing block from a failing store).
	Get(ctx context.Context, id flist.BlockID) ([]byte, error)
	// Has reports whether the store holds id.
	Has(ctx context.Context, id flist.BlockID) (bool, error)
	// Put stores data under id; storing a block again is not an error. Put must not keep
	// data after it returns.
	Put(ctx context.Context, id flist.BlockID, data []byte) error
}

// Config configures a hub. Dir and Blocks are required; the zero value of every other field
// is a documented default.
type Config struct {
	// Dir holds names.json, flists.json and tmp/ (uploads being received). It is created
	// if missing.
	Dir string
	// Blocks stores blocks and flist files.
	Blocks BlockStore
	// Listen is the TCP address Run listens on; "" means DefaultListen.
	Listen string
	// Token authorises writes; "" makes the hub read-only (every write answers 403).
	Token string
	// MaxFlistSize bounds an uploaded flist in bytes; 0 means DefaultMaxFlistSize.
	MaxFlistSize int64
	// PartSize is the size of the parts flist files are stored as; 0 means
	// DefaultPartSize. It must not exceed what Blocks accepts in one Put.
	PartSize int
	// BodyStallTimeout cuts a request whose body sends nothing for that long; 0 means
	// DefaultBodyStallTimeout.
	BodyStallTimeout time.Duration
	// MaxBodiesPerClient bounds the requests with a body one client address has in
	// flight; 0 means DefaultMaxBodiesPerClient.
	MaxBodiesPerClient int
	// Logger receives the hub's logs (component=hub); nil means slog.Default().
	Logger *slog.Logger
}

// Server is a hub. Create it with New, serve it with Run or Serve, or mount Handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	tmpDir  string
	cat     *catalog
	bodies  clientLimiter
	handler http.Handler
}

// New checks cfg and loads the hub's state from cfg.Dir. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("hub: no data directory")
	}
	if cfg.Blocks == nil {
		return nil, errors.New("hub: no block store")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxFlistSize <= 0 {
		cfg.MaxFlistSize = DefaultMaxFlistSize
	}
	if cfg.PartSize <= 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.BodyStallTimeout <= 0 {
		cfg.BodyStallTimeout = DefaultBodyStallTimeout
	}
	if cfg.MaxBodiesPerClient <= 0 {
		cfg.MaxBodiesPerClient = DefaultMaxBodiesPerClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "hub"), tmpDir: filepath.Join(cfg.Dir, "tmp")}
	s.bodies.max = cfg.MaxBodiesPerClient
	// Leftovers of uploads cut short by a crash are useless: start with an empty tmp/.
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	if err := os.MkdirAll(s.tmpDir, 0o700); err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	cat, err := loadCatalog(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.cat = cat
	s.handler = s.routes()
	return s, nil
}

// Handler returns the hub's HTTP handler, for tests or to mount it in another server.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on cfg.Listen and serves until ctx ends, then shuts down cleanly.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then stops accepting, lets the requests in flight
// finish for a bounded time and closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("serving", "addr", ln.Addr().String(), "read_only", s.cfg.Token == "", "flists", s.cat.count())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("hub: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	<-errc
	if err != nil {
		return fmt.Errorf("hub: shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// sync makes the store's writes durable if it buffers them.
func (s *Server) sync(ctx context.Context) error {
	if sy, ok := s.cfg.Blocks.(interface{ Sync(context.Context) error }); ok {
		return sy.Sync(ctx)
	}
	return nil
}
