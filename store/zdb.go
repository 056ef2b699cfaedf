package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
)

// ZdbDefaultPort is the port of a zdb:// URL that names none.
const ZdbDefaultPort = "9900"

// ZdbConfig says how to reach a 0-db.
type ZdbConfig struct {
	Addr      string // host:port
	Namespace string // "" for the default namespace
	Username  string // kept for the URL only: 0-db has no users
	Password  string // namespace password, or AUTH password when there is no namespace
	// Timeout bounds each command when the caller's context has no deadline (default 1m).
	Timeout time.Duration
	// MaxIdle is the number of idle connections kept for reuse (default 8).
	MaxIdle int
}

// ParseZdbURL parses zdb://[user[:pass]@]host[:port][/namespace]. Errors wrap ErrUnsupported.
func ParseZdbURL(rawURL string) (ZdbConfig, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return ZdbConfig{}, err
	}
	bad := func(why string) (ZdbConfig, error) {
		return ZdbConfig{}, fmt.Errorf("%w: %s: %s", ErrUnsupported, StripPassword(rawURL), why)
	}
	if u.Scheme != "zdb" {
		return bad("not a zdb:// URL")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return bad("no host")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad("unexpected query or fragment")
	}
	port := u.Port()
	if port == "" {
		port = ZdbDefaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return bad("bad port")
	}
	ns := strings.TrimPrefix(u.Path, "/")
	if strings.Contains(ns, "/") {
		return bad("namespace must be a single path element")
	}
	cfg := ZdbConfig{Addr: net.JoinHostPort(u.Hostname(), port), Namespace: ns}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	return cfg, nil
}

// Zdb is a store in a 0-db (or any redis-protocol server): GET, SET and EXISTS with the raw
// id as key. When a namespace is configured, every new connection first sends
// `SELECT namespace [password]` (0-db semantics). Without a namespace but with a password,
// it sends `AUTH password` instead. A plain redis-server is reached with no namespace (or a
// numeric one, which redis takes as a database number); tests use it so.
//
// Connections are pooled; each command is bounded by the context's deadline (or
// ZdbConfig.Timeout) and aborted when the context is cancelled.
type Zdb struct {
	cfg  ZdbConfig
	name string

	mu     sync.Mutex
	idle   []*respConn
	closed bool
}

var _ Store = (*Zdb)(nil)

// NewZdb returns a store for the 0-db cfg names. It does not connect yet.
func NewZdb(cfg ZdbConfig) (*Zdb, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w: zdb address %q: %v", ErrUnsupported, cfg.Addr, err)
	}
	if strings.Contains(cfg.Namespace, "/") {
		return nil, fmt.Errorf("%w: zdb namespace %q", ErrUnsupported, cfg.Namespace)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = 8
	}
	u := url.URL{Scheme: "zdb", Host: cfg.Addr}
	if cfg.Username != "" {
		u.User = url.User(cfg.Username)
	}
	if cfg.Namespace != "" {
		u.Path = "/" + cfg.Namespace
	}
	return &Zdb{cfg: cfg, name: u.String()}, nil
}

// String returns zdb://[user@]host:port[/ns].
func (z *Zdb) String() string { return z.name }

// Close closes the idle connections; connections in use are closed when released.
func (z *Zdb) Close() error {
	z.mu.Lock()
	idle := z.idle
	z.idle, z.closed = nil, true
	z.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
	return nil
}

// Get reads a block with GET.
func (z *Zdb) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if err := begin(ctx, z, "get", id); err != nil {
		return nil, err
	}
	r, err := z.do(ctx, []byte("GET"), id.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: get %x: %w", z, id, err)
	}
	switch {
	case r.kind == '$' && r.null:
		return nil, fmt.Errorf("%s: get %x: %w", z, id, ErrNotFound)
	case r.kind == '$':
		return r.str, nil
	}
	return nil, fmt.Errorf("%s: get %x: unexpected reply type %q", z, id, r.kind)
}

// Has asks with EXISTS.
func (z *Zdb) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	if err := begin(ctx, z, "has", id); err != nil {
		return false, err
	}
	r, err := z.do(ctx, []byte("EXISTS"), id.Bytes())
	if err != nil {
		return false, fmt.Errorf("%s: has %x: %w", z, id, err)
	}
	if r.kind != ':' {
		return false, fmt.Errorf("%s: has %x: unexpected reply type %q", z, id, r.kind)
	}
	return r.n > 0, nil
}

// Put writes a block with SET.
func (z *Zdb) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	if err := begin(ctx, z, "put", id); err != nil {
		return err
	}
	if err := checkPut(z, id, data); err != nil {
		return err
	}
	// redis answers +OK; 0-db answers with the key, or a null when the value is unchanged.
	if _, err := z.do(ctx, []byte("SET"), id.Bytes(), data); err != nil {
		return fmt.Errorf("%s: put %x: %w", z, id, err)
	}
	return nil
}

// do runs one command on a pooled connection. A command that failed on a reused
// connection because of an I/O error (the server may have closed it while idle) is
// retried once on a new connection: GET, SET and EXISTS are idempotent.
func (z *Zdb) do(ctx context.Context, args ...[]byte) (respReply, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := z.conn(ctx)
		if err != nil {
			return respReply{}, err
		}
		r, err := c.do(ctx, z.cfg.Timeout, args...)
		var se respError
		if err == nil || errors.As(err, &se) {
			z.release(c)
			return r, err
		}
		c.nc.Close()
		if ctx.Err() != nil {
			return respReply{}, ctx.Err()
		}
		if !reused || attempt > 0 || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			return respReply{}, err
		}
	}
}

// conn returns an idle connection, or dials and prepares a new one.
func (z *Zdb) conn(ctx context.Context) (c *respConn, reused bool, err error) {
	z.mu.Lock()
	if z.closed {
		z.mu.Unlock()
		return nil, false, errors.New("store closed")
	}
	if n := len(z.idle); n > 0 {
		c = z.idle[n-1]
		z.idle = z.idle[:n-1]
		z.mu.Unlock()
		return c, true, nil
	}
	z.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, z.cfg.Timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", z.cfg.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, false, deadlineErr(ctx, err)
	}
	c = &respConn{nc: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc)}
	var hello [][]byte
	switch {
	case z.cfg.Namespace != "" && z.cfg.Password != "":
		hello = [][]byte{[]byte("SELECT"), []byte(z.cfg.Namespace), []byte(z.cfg.Password)}
	case z.cfg.Namespace != "":
		hello = [][]byte{[]byte("SELECT"), []byte(z.cfg.Namespace)}
	case z.cfg.Password != "":
		hello = [][]byte{[]byte("AUTH"), []byte(z.cfg.Password)}
	}
	if hello != nil {
		if _, err := c.do(ctx, z.cfg.Timeout, hello...); err != nil {
			nc.Close()
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			return nil, false, fmt.Errorf("%s: %w", hello[0], err)
		}
	}
	return c, false, nil
}

// release returns a healthy connection to the pool.
func (z *Zdb) release(c *respConn) {
	z.mu.Lock()
	if !z.closed && len(z.idle) < z.cfg.MaxIdle {
		z.idle = append(z.idle, c)
		c = nil
	}
	z.mu.Unlock()
	if c != nil {
		c.nc.Close()
	}
}

// respConn is one connection speaking RESP2.
type respConn struct {
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
}

// respReply is a non-array RESP2 reply.
type respReply struct {
	kind byte // '+', ':' or '$'
	str  []byte
	n    int64
	null bool // '$' with length -1
}

// respError is an error reply from the server; the connection stays usable.
type respError string

func (e respError) Error() string { return "server error: " + string(e) }

// longAgo is a deadline in the past, used to abort blocked I/O.
var longAgo = time.Unix(1, 0)

// do sends one command and reads its reply. Any error other than respError leaves the
// connection in an unknown state: the caller closes it.
func (c *respConn) do(ctx context.Context, timeout time.Duration, args ...[]byte) (r respReply, err error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(timeout)
	}
	if err := c.nc.SetDeadline(deadline); err != nil {
		return r, err
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(longAgo) })
	defer func() {
		if !stop() {
			// Cancelled: the connection's deadline was (or is being) spoiled behind our
			// back. Report the cancellation, so that the caller drops the connection.
			err = ctx.Err()
		}
	}()

	c.w.WriteByte('*')
	c.w.WriteString(strconv.Itoa(len(args)))
	c.w.WriteString("\r\n")
	for _, a := range args {
		c.w.WriteByte('$')
		c.w.WriteString(strconv.Itoa(len(a)))
		c.w.WriteString("\r\n")
		c.w.Write(a)
		c.w.WriteString("\r\n")
	}
	if err := c.w.Flush(); err != nil {
		return r, deadlineErr(ctx, err)
	}
	r, err = c.readReply()
	return r, deadlineErr(ctx, err)
}

// deadlineErr reports an I/O timeout at the context's deadline as the context's error:
// the connection's deadline may pass a moment before the context notices its own.
func deadlineErr(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// readReply reads one reply; bulk strings are bounded by MaxBlockSize.
func (c *respConn) readReply() (respReply, error) {
	line, err := c.readLine()
	if err != nil {
		return respReply{}, err
	}
	if len(line) == 0 {
		return respReply{}, errors.New("protocol error: empty reply line")
	}
	kind, rest := line[0], line[1:]
	switch kind {
	case '+':
		return respReply{kind: kind, str: bytes.Clone(rest)}, nil
	case '-':
		return respReply{}, respError(rest)
	case ':':
		n, err := strconv.ParseInt(string(rest), 10, 64)
		if err != nil {
			return respReply{}, fmt.Errorf("protocol error: bad integer %q", rest)
		}
		return respReply{kind: kind, n: n}, nil
	case '$':
		n, err := strconv.ParseInt(string(rest), 10, 64)
		if err != nil || n < -1 {
			return respReply{}, fmt.Errorf("protocol error: bad bulk length %q", rest)
		}
		if n == -1 {
			return respReply{kind: kind, null: true}, nil
		}
		if n > MaxBlockSize {
			return respReply{}, tooLarge(n)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return respReply{}, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return respReply{}, errors.New("protocol error: bulk string not terminated by CRLF")
		}
		return respReply{kind: kind, str: buf[:n]}, nil
	}
	return respReply{}, fmt.Errorf("protocol error: unexpected reply type %q", kind)
}

// readLine reads a CRLF-terminated line of at most the reader's buffer size, without CRLF.
// The result is valid until the next read.
func (c *respConn) readLine() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("protocol error: reply line too long")
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errors.New("protocol error: line not terminated by CRLF")
	}
	return line[:len(line)-2], nil
}
