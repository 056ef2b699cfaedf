package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
)

// Client talks to the daemon over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the daemon listening at socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Status returns the daemon's state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// Mount asks the daemon to mount an flist.
func (c *Client) Mount(ctx context.Context, req MountRequest) (Mount, error) {
	var m Mount
	return m, c.do(ctx, http.MethodPost, "/v1/mounts", req, &m)
}

// Unmount asks the daemon to unmount mountpoint.
func (c *Client) Unmount(ctx context.Context, mountpoint string) error {
	return c.do(ctx, http.MethodDelete, "/v1/mounts?mountpoint="+url.QueryEscape(mountpoint), nil, nil)
}

// Pull asks the daemon to fetch and pin every block of an flist, calling progress with
// each report, and returns the last one.
func (c *Client) Pull(ctx context.Context, ref string, progress func(PullProgress)) (PullProgress, error) {
	resp, err := c.request(ctx, http.MethodPost, "/v1/pull", PullRequest{Ref: ref})
	if err != nil {
		return PullProgress{}, err
	}
	defer drain(resp.Body)
	sc := bufio.NewScanner(resp.Body)
	var last PullProgress
	for sc.Scan() {
		var p PullProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return last, fmt.Errorf("daemon: bad progress line: %w", err)
		}
		last = p
		if p.Done {
			if p.Error != "" {
				return p, errors.New(p.Error)
			}
			return p, nil
		}
		if progress != nil {
			progress(p)
		}
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("daemon: %w", err)
	}
	return last, errors.New("daemon: the pull ended without a result (did the daemon stop?)")
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon: bad reply: %w", err)
	}
	return nil
}

// request sends a request and turns a failure status into an error with the daemon's
// message.
func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://zosfs"+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no daemon listening on %s (start one with `zosfs-agent daemon`, or set --api / ZOSFS_API)", c.socket)
		}
		return nil, fmt.Errorf("daemon at %s: %w", c.socket, err)
	}
	if resp.StatusCode >= 300 {
		defer drain(resp.Body)
		var e Error
		if json.NewDecoder(io.LimitReader(resp.Body, maxRequestBody)).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("daemon: %s", resp.Status)
	}
	return resp, nil
}
