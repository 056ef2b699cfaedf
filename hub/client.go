package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/blake2b"

	"github.com/zosfs/zosfs-agent/flist"
)

const octetStream = "application/octet-stream"

// maxMessage bounds the part of an error answer a client reads for its message, and
// maxJSONAnswer the JSON answers it decodes (a listing of many flists is the largest).
const (
	maxMessage    = 1 << 10
	maxJSONAnswer = 64 << 20
)

// defaultClient is used when NewClient is given no *http.Client. The caller's context
// bounds each call; the header timeout only catches a hub that accepts and never answers
// (an upload's answer comes after the hub has validated and stored the flist).
var defaultClient = func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	t.ResponseHeaderTimeout = 5 * time.Minute
	return &http.Client{Transport: t}
}()

// StatusError is a hub's refusal: the HTTP status and the hub's one-line message. A 404
// wraps ErrNotFound.
type StatusError struct {
	Method, Path string
	Code         int
	Message      string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hub: %s %s: %d %s: %s", e.Method, e.Path, e.Code, http.StatusText(e.Code), e.Message)
}

func (e *StatusError) Unwrap() error {
	if e.Code == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// Client talks to a hub. It is safe for concurrent use, and is a flist.BlockSink (Has,
// Put), so a pack can write its blocks straight to a hub.
type Client struct {
	base  string // without trailing slash
	token string
	hc    *http.Client
}

var _ flist.BlockSink = (*Client)(nil)

// NewClient returns a client of the hub at baseURL (http:// or https://). token is sent
// with writes; "" allows reads only. A nil httpClient means a shared default one.
func NewClient(baseURL, token string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("hub URL %q: want http(s)://host[:port][/path]", baseURL)
	}
	if httpClient == nil {
		httpClient = defaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: httpClient}, nil
}

// String returns the hub's base URL.
func (c *Client) String() string { return c.base }

// do sends a request and returns the answer if its status is 2xx; otherwise it returns a
// *StatusError. The caller closes the body.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, ctype string, auth bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("hub: %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if auth && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("hub: %s %s: %w", method, path, ctx.Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("hub: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
	resp.Body.Close()
	text := strings.TrimSpace(strings.ToValidUTF8(string(msg), "?"))
	if text == "" {
		text = resp.Status
	}
	return nil, &StatusError{Method: method, Path: path, Code: resp.StatusCode, Message: text}
}

// doJSON sends body (JSON-encoded unless nil) and decodes the answer into out (if not nil).
func (c *Client) doJSON(ctx context.Context, method, path string, body any, auth bool, out any) error {
	var r io.Reader
	ctype := ""
	if body != nil {
		ctype = "application/json"
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	resp, err := c.do(ctx, method, path, r, ctype, auth)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONAnswer)).Decode(out); err != nil {
		return fmt.Errorf("hub: %s %s: bad answer: %w", method, path, err)
	}
	return nil
}

func blockPath(id flist.BlockID) string {
	x := id.String()
	if len(x) < 2 { // the zero id: the hub answers 400
		return "/blocks/" + x
	}
	return "/blocks/" + x[:2] + "/" + x
}

// checkBlockID refuses ids no block can have before anything is sent: the hub would
// only answer 404.
func checkBlockID(id flist.BlockID) error {
	if !id.Valid() {
		return fmt.Errorf("hub: no block id")
	}
	return nil
}

// GetBlock fetches a block and verifies it against its id.
func (c *Client) GetBlock(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if err := checkBlockID(id); err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodGet, blockPath(id), nil, "", false)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > flist.MaxBlockStored {
		return nil, fmt.Errorf("hub: block %x: %d bytes, more than the maximum of %d", id, resp.ContentLength, flist.MaxBlockStored)
	}
	data, err := readBody(resp, flist.MaxBlockStored)
	if err != nil {
		return nil, fmt.Errorf("hub: block %x: %w", id, err)
	}
	if len(data) > flist.MaxBlockStored {
		return nil, fmt.Errorf("hub: block %x: more than the maximum of %d bytes", id, flist.MaxBlockStored)
	}
	if err := flist.VerifyBlock(id, data); err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	return data, nil
}

// HasBlock reports whether the hub holds a block.
func (c *Client) HasBlock(ctx context.Context, id flist.BlockID) (bool, error) {
	if err := checkBlockID(id); err != nil {
		return false, err
	}
	resp, err := c.do(ctx, http.MethodHead, blockPath(id), nil, "", false)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return true, nil
}

// PutBlock stores a block on the hub, which checks that data hashes to id.
func (c *Client) PutBlock(ctx context.Context, id flist.BlockID, data []byte) error {
	if err := checkBlockID(id); err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPut, blockPath(id), bytes.NewReader(data), octetStream, true)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Has is HasBlock, for flist.BlockSink.
func (c *Client) Has(ctx context.Context, id flist.BlockID) (bool, error) { return c.HasBlock(ctx, id) }

// Put is PutBlock, for flist.BlockSink.
func (c *Client) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	return c.PutBlock(ctx, id, data)
}

// Missing returns the ids the hub lacks among ids, in their order, asking in batches of
// MaxMissingIDs.
func (c *Client) Missing(ctx context.Context, ids []flist.BlockID) ([]flist.BlockID, error) {
	var out []flist.BlockID
	for start := 0; start < len(ids); start += MaxMissingIDs {
		batch := ids[start:min(start+MaxMissingIDs, len(ids))]
		req := missingRequest{IDs: make([]string, len(batch))}
		for i, id := range batch {
			req.IDs[i] = id.String()
		}
		var ans missingAnswer
		if err := c.doJSON(ctx, http.MethodPost, "/blocks/missing", req, false, &ans); err != nil {
			return nil, err
		}
		for _, x := range ans.Missing {
			id, err := flist.ParseBlockIDHex(x)
			if err != nil {
				return nil, fmt.Errorf("hub: /blocks/missing: %w", err)
			}
			out = append(out, id)
		}
	}
	return out, nil
}

// UploadFlist uploads the flist file read from r and, if name is not empty, points name
// at it. It returns the CID the hub computed.
func (c *Client) UploadFlist(ctx context.Context, r io.Reader, name string) (string, error) {
	path := "/flists"
	if name != "" {
		path += "?" + url.Values{"name": {name}}.Encode()
	}
	resp, err := c.do(ctx, http.MethodPost, path, r, octetStream, true)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var res UploadResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxMessage)).Decode(&res); err != nil {
		return "", fmt.Errorf("hub: POST /flists: bad answer: %w", err)
	}
	if _, err := ParseCID(res.CID); err != nil {
		return "", fmt.Errorf("hub: POST /flists: bad answer: %w", err)
	}
	return res.CID, nil
}

// GetFlist writes the flist named cid to w, at most DefaultMaxFlistSize bytes, and checks
// that the bytes hash to the CID (if not, w has received them anyway: write to a
// temporary file).
func (c *Client) GetFlist(ctx context.Context, cid string, w io.Writer) error {
	key, digest, err := parseCID(cid)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodGet, "/flists/"+key, nil, "", false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h, _ := blake2b.New256(nil)
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(resp.Body, DefaultMaxFlistSize+1))
	if err != nil {
		return fmt.Errorf("hub: flist %s: %w", key, err)
	}
	if n > DefaultMaxFlistSize {
		return fmt.Errorf("hub: flist %s: more than the maximum of %d bytes", key, DefaultMaxFlistSize)
	}
	if !bytes.Equal(h.Sum(nil), digest) {
		return fmt.Errorf("hub: flist %s: the %d bytes received do not hash to the CID", key, n)
	}
	return nil
}

// SetName points name (USER/NAME) at the flist cid, which the hub must hold.
func (c *Client) SetName(ctx context.Context, name, cid string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return c.doJSON(ctx, http.MethodPut, "/names/"+name, nameRequest{CID: cid}, true, nil)
}

// Resolve returns the CID a name (USER/NAME) points at; ErrNotFound if none.
func (c *Client) Resolve(ctx context.Context, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	var info FlistInfo
	if err := c.doJSON(ctx, http.MethodGet, "/names/"+name, nil, false, &info); err != nil {
		return "", err
	}
	return ParseCID(info.CID)
}

// List returns the hub's listing: named flists, then unnamed ones.
func (c *Client) List(ctx context.Context) ([]FlistInfo, error) {
	var out []FlistInfo
	err := c.doJSON(ctx, http.MethodGet, "/flists", nil, false, &out)
	return out, err
}

// readBody reads a response body of at most max bytes (max+1 read means too long). With a
// Content-Length it reads into one buffer of that size: io.ReadAll would grow its buffer
// from 512 bytes, copying a 512 KiB block a dozen times.
func readBody(resp *http.Response, max int64) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= max {
		buf := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return io.ReadAll(io.LimitReader(resp.Body, max+1))
}
