package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zosfs/zosfs-agent/flist"
)

// HTTP is a read-only store served over HTTP(S): block X (hex) is fetched from
// base/<X[0:2]>/<X>, and on 404 from base/<X>. User info in the base URL is sent as
// basic authentication.
type HTTP struct {
	base   string // without trailing slash
	name   string // base without password
	client *http.Client
}

var _ Store = (*HTTP)(nil)

// defaultHTTPClient is used when NewHTTP is given no client. The caller's context bounds
// each request; the client's timeout is only a backstop.
var defaultHTTPClient = func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	t.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: t, Timeout: 2 * time.Minute}
}()

// NewHTTP returns the read-only store at base (an http:// or https:// URL). A nil client
// means a shared default one.
func NewHTTP(base string, client *http.Client) (*HTTP, error) {
	u, err := parseURL(base)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: %s: want http(s)://host/path", ErrUnsupported, StripPassword(base))
	}
	if client == nil {
		client = defaultHTTPClient
	}
	base = strings.TrimRight(base, "/")
	return &HTTP{base: base, name: StripPassword(base), client: client}, nil
}

// String returns the base URL without password.
func (h *HTTP) String() string { return h.name }

// Close does nothing: the client may be shared.
func (h *HTTP) Close() error { return nil }

// Put fails with ErrReadOnly.
func (h *HTTP) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	return fmt.Errorf("%s: put %x: %w", h, id, ErrReadOnly)
}

// Get fetches a block.
func (h *HTTP) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if err := begin(ctx, h, "get", id); err != nil {
		return nil, err
	}
	x := id.String()
	for _, p := range []string{x[:2] + "/" + x, x} {
		data, found, err := h.get(ctx, http.MethodGet, p)
		if err != nil {
			return nil, fmt.Errorf("%s: get %s: %w", h, x, err)
		}
		if found {
			return data, nil
		}
	}
	return nil, fmt.Errorf("%s: get %s: %w", h, x, ErrNotFound)
}

// Has asks for a block with HEAD requests.
func (h *HTTP) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	if err := begin(ctx, h, "has", id); err != nil {
		return false, err
	}
	x := id.String()
	for _, p := range []string{x[:2] + "/" + x, x} {
		_, found, err := h.get(ctx, http.MethodHead, p)
		if err != nil {
			return false, fmt.Errorf("%s: has %s: %w", h, x, err)
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// get requests base/p; found is false on 404. The error never shows the password.
func (h *HTTP) get(ctx context.Context, method, p string) (data []byte, found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, method, h.base+"/"+p, nil)
	if err != nil {
		return nil, false, fmt.Errorf("bad request URL: %w", ErrUnsupported)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		// *url.Error includes the URL, which may hold a password: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, false, fmt.Errorf("%s %s: %w", method, p, err)
	}
	defer func() {
		// Drain a little so the connection can be reused.
		io.CopyN(io.Discard, resp.Body, 64<<10)
		resp.Body.Close()
	}()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, false, nil
	case resp.StatusCode != http.StatusOK:
		return nil, false, fmt.Errorf("%s %s: unexpected status %s", method, p, resp.Status)
	case method == http.MethodHead:
		return nil, true, nil
	}
	if resp.ContentLength > MaxBlockSize {
		return nil, false, tooLarge(resp.ContentLength)
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, MaxBlockSize+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, false, fmt.Errorf("%s %s: reading body: %w", method, p, err)
	}
	if len(data) > MaxBlockSize {
		return nil, false, tooLarge(-1)
	}
	return data, true, nil
}
