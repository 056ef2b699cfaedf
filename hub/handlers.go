package hub

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/store"
)

// immutable is the Cache-Control of content-addressed answers (blocks, flists by CID).
const immutable = "public, max-age=31536000, immutable"

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /blocks/{prefix}/{id}", s.getBlock)
	mux.HandleFunc("GET /blocks/{id}", s.getBlock)
	mux.HandleFunc("PUT /blocks/{prefix}/{id}", s.writer(s.putBlock))
	mux.HandleFunc("PUT /blocks/{id}", s.writer(s.putBlock))
	mux.HandleFunc("POST /blocks/missing", s.missing)
	mux.HandleFunc("GET /flists", s.listFlists)
	mux.HandleFunc("POST /flists", s.writer(s.uploadFlist))
	mux.HandleFunc("GET /flists/{cid}", s.getFlist)
	mux.HandleFunc("GET /names/{user}/{name}", s.getName)
	// {name...} so that a name with too many parts is refused as a bad name (400).
	mux.HandleFunc("PUT /names/{name...}", s.writer(s.putName))
	mux.HandleFunc("GET /{user}/{file}", s.getNamedFile)
	return s.logRequests(s.guardBodies(s.checkPath(mux)))
}

// statusWriter remembers the status and size of an answer, for the request log.
type statusWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.code,
			"bytes", sw.n, "duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

// checkPath refuses paths holding "." or ".." segments (also percent-encoded: r.URL.Path
// is decoded), empty segments or NUL, before the mux would clean and redirect them.
func (s *Server) checkPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		bad := !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0)
		segs := strings.Split(p, "/")
		for i := 1; i < len(segs) && !bad; i++ {
			bad = segs[i] == "." || segs[i] == ".." || (segs[i] == "" && i < len(segs)-1)
		}
		if bad {
			s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("malformed path %.200q", p))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request the hub will not serve (4xx) with a one-line message.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	msg = strings.ReplaceAll(msg, "\n", " ")
	s.log.Info("refused", "method", r.Method, "path", r.URL.Path, "status", code, "why", msg, "remote", r.RemoteAddr)
	http.Error(w, msg, code)
}

// internal answers a failure of the hub itself (500); the cause goes to the log only.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.Warn("failed", "method", r.Method, "path", r.URL.Path, "what", what, "err", err)
	http.Error(w, what+" failed on the hub (see its log)", http.StatusInternalServerError)
}

// refuseBody answers a body that could not be read: 413 past its bound, 408 when it
// stalled, else 400.
func (s *Server) refuseBody(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		s.refuse(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than the limit of %d bytes", mbe.Limit))
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.refuse(w, r, http.StatusRequestTimeout, "the body stalled: nothing came for "+s.cfg.BodyStallTimeout.String())
		return
	}
	s.refuse(w, r, http.StatusBadRequest, "bad body: "+err.Error())
}

// decodeBody reads the request's body, at most limit bytes, as one JSON value into v:
// anything after it is refused, so that a body means one thing only.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		if err == nil || errors.As(err, new(*json.SyntaxError)) {
			err = errors.New("data after the JSON value")
		}
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writer guards a handler that writes: the hub must have a token and the request must
// carry it.
func (s *Server) writer(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" {
			s.refuse(w, r, http.StatusForbidden, "this hub is read-only: it was started without a token")
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="zosfs-hub"`)
			s.refuse(w, r, http.StatusUnauthorized, "a write needs a token: Authorization: Bearer TOKEN")
			return
		}
		// Hashing first makes the comparison constant-time in the length too.
		got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.cfg.Token))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			s.refuse(w, r, http.StatusForbidden, "wrong token")
			return
		}
		h(w, r)
	}
}

// blockID is the id a /blocks path names; the fan-out directory, if any, must match it.
func blockID(r *http.Request) (flist.BlockID, error) {
	x := r.PathValue("id")
	id, err := flist.ParseBlockIDHex(x)
	if err != nil {
		return flist.BlockID{}, err
	}
	if p := r.PathValue("prefix"); p != "" && !strings.EqualFold(p, x[:2]) {
		return flist.BlockID{}, fmt.Errorf("block %s: directory %.80q is not its first two hex digits", x, p)
	}
	return id, nil
}

func (s *Server) getBlock(w http.ResponseWriter, r *http.Request) {
	id, err := blockID(r)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	if r.Method == http.MethodGet {
		if o, ok := s.cfg.Blocks.(blockFileOpener); ok {
			s.sendBlockFile(w, r, o, id)
			return
		}
	}
	var data []byte
	if r.Method == http.MethodHead {
		ok, err := s.cfg.Blocks.Has(ctx, id)
		if err != nil {
			s.internal(w, r, "has block", err)
			return
		}
		if !ok {
			http.Error(w, "block not found", http.StatusNotFound)
			return
		}
	} else if data, err = s.cfg.Blocks.Get(ctx, id); err != nil {
		if ok, herr := s.cfg.Blocks.Has(ctx, id); herr == nil && !ok {
			http.Error(w, "block not found", http.StatusNotFound)
			return
		}
		s.internal(w, r, "get block", err)
		return
	}
	w.Header().Set("Content-Type", octetStream)
	w.Header().Set("Cache-Control", immutable)
	if r.Method != http.MethodHead {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	}
	w.Write(data)
}

// blockFileOpener is a block store that gives a block's file (store.Dir): the hub sends
// it with sendfile(2) rather than reading it into memory, which on a busy hub is most of
// its CPU (copies, and the garbage of a 512 KiB buffer per block).
type blockFileOpener interface {
	Open(ctx context.Context, id flist.BlockID) (*os.File, int64, error)
}

// sendBlockFile answers GET of a block from its file.
func (s *Server) sendBlockFile(w http.ResponseWriter, r *http.Request, o blockFileOpener, id flist.BlockID) {
	f, size, err := o.Open(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "block not found", http.StatusNotFound)
		return
	}
	if err != nil {
		s.internal(w, r, "open block", err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", octetStream)
	w.Header().Set("Cache-Control", immutable)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	// The ResponseWriter's ReadFrom sends an *os.File with sendfile.
	if n, err := io.Copy(w, f); err != nil || n != size {
		s.log.Debug("sending a block", "id", id, "sent", n, "size", size, "err", err)
	}
}

func (s *Server) putBlock(w http.ResponseWriter, r *http.Request) {
	id, err := blockID(r)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBlockSize))
	if err != nil {
		s.refuseBody(w, r, err)
		return
	}
	if err := flist.VerifyBlock(id, data); err != nil {
		s.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.cfg.Blocks.Put(r.Context(), id, data); err != nil {
		s.internal(w, r, "put block", err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// missingRequest and missingAnswer are the bodies of POST /blocks/missing.
type missingRequest struct {
	IDs []string `json:"ids"`
}

type missingAnswer struct {
	Missing []string `json:"missing"`
}

func (s *Server) missing(w http.ResponseWriter, r *http.Request) {
	var req missingRequest
	if err := decodeBody(w, r, maxMissingBody, &req); err != nil {
		s.refuseBody(w, r, err)
		return
	}
	if len(req.IDs) > MaxMissingIDs {
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("%d ids: at most %d per request", len(req.IDs), MaxMissingIDs))
		return
	}
	ids := make([]flist.BlockID, len(req.IDs))
	for i, x := range req.IDs {
		id, err := flist.ParseBlockIDHex(x)
		if err != nil {
			s.refuse(w, r, http.StatusBadRequest, err.Error())
			return
		}
		ids[i] = id
	}
	lacks := make([]bool, len(ids))
	g, ctx := errgroup.WithContext(r.Context())
	g.SetLimit(missingWorkers)
	for i, id := range ids {
		g.Go(func() error {
			ok, err := s.cfg.Blocks.Has(ctx, id)
			lacks[i] = !ok
			return err
		})
	}
	if err := g.Wait(); err != nil {
		s.internal(w, r, "has block", err)
		return
	}
	ans := missingAnswer{Missing: []string{}}
	for i, id := range ids {
		if lacks[i] {
			ans.Missing = append(ans.Missing, id.String())
		}
	}
	writeJSON(w, http.StatusOK, ans)
}

func (s *Server) uploadFlist(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	name := q.Get("name")
	if _, given := q["name"]; given {
		if err := ValidName(name); err != nil {
			s.refuse(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	tmp, err := os.CreateTemp(s.tmpDir, "upload-*")
	if err != nil {
		s.internal(w, r, "spool upload", err)
		return
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	sum := md5.New()
	c, err := flist.FileCID(io.TeeReader(http.MaxBytesReader(w, r.Body, s.cfg.MaxFlistSize), io.MultiWriter(tmp, sum)))
	if err != nil {
		var pe *fs.PathError // writing the spool file failed: the hub's fault
		if errors.As(err, &pe) {
			s.internal(w, r, "spool upload", err)
		} else {
			s.refuseBody(w, r, err)
		}
		return
	}
	fi, err := tmp.Stat()
	if err != nil {
		s.internal(w, r, "spool upload", err)
		return
	}
	size, key := fi.Size(), c.String()
	if size == 0 {
		s.refuse(w, r, http.StatusBadRequest, "empty body: not an flist")
		return
	}
	if _, ok := s.cat.flist(key); !ok {
		if err := validateFlist(ctx, tmp.Name()); err != nil {
			s.refuse(w, r, http.StatusBadRequest, "not a readable flist: "+strings.ReplaceAll(err.Error(), tmp.Name(), "upload"))
			return
		}
		parts, err := s.storeParts(ctx, tmp, size)
		if err == nil {
			err = s.sync(ctx)
		}
		if err == nil {
			err = s.cat.addFlist(key, flistRecord{Size: size, MD5: hex.EncodeToString(sum.Sum(nil)), Parts: parts, Created: time.Now().UTC()}, r.RemoteAddr)
		}
		if err != nil {
			s.internal(w, r, "store flist", err)
			return
		}
		s.log.Info("flist stored", "cid", key, "size", size, "parts", len(parts), "remote", r.RemoteAddr)
	}
	res := UploadResult{CID: key, Size: size}
	if name != "" {
		_, prev, err := s.cat.setName(name, key, time.Now().UTC(), r.RemoteAddr)
		if err != nil {
			s.internal(w, r, "set name", err)
			return
		}
		res.Name = name
		s.log.Info("name set", "name", name, "cid", key, "old", prev, "remote", r.RemoteAddr)
	}
	writeJSON(w, http.StatusOK, res)
}

// validateFlist opens the flist at path and reads all of it: entries, blocks, routes, tags.
func validateFlist(ctx context.Context, path string) error {
	f, err := flist.Open(ctx, path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = flist.Walk(ctx, f, func(p string, e flist.Entry) error {
		if e.Type != flist.TypeFile {
			return nil
		}
		if _, err := f.Blocks(ctx, e.Ino); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := f.Routes(ctx); err != nil {
		return err
	}
	_, err = f.Tags(ctx)
	return err
}

// storeParts stores the file's bytes as parts of at most PartSize bytes, each under its
// BLAKE2b-256, and returns their ids.
func (s *Server) storeParts(ctx context.Context, f *os.File, size int64) ([]string, error) {
	buf := make([]byte, min(int64(s.cfg.PartSize), size))
	r := io.NewSectionReader(f, 0, size)
	var parts []string
	for {
		n, err := io.ReadFull(r, buf)
		if err == io.EOF {
			return parts, nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		id := flist.HashBlock(buf[:n])
		if err := s.cfg.Blocks.Put(ctx, id, buf[:n]); err != nil {
			return nil, err
		}
		parts = append(parts, id.String())
	}
}

// serveFlist writes an flist's bytes, verifying each part against its id.
func (s *Server) serveFlist(w http.ResponseWriter, r *http.Request, cid string, rec flistRecord) {
	w.Header().Set("Content-Type", octetStream)
	w.Header().Set("Content-Length", strconv.FormatInt(rec.Size, 10))
	w.Header().Set("ETag", `"`+cid+`"`)
	if r.Method == http.MethodHead {
		return
	}
	for i, p := range rec.Parts {
		id, err := flist.ParseBlockIDHex(p)
		var data []byte
		if err == nil {
			data, err = s.cfg.Blocks.Get(r.Context(), id)
		}
		if err == nil {
			err = flist.VerifyBlock(id, data)
		}
		if err != nil {
			if i == 0 {
				s.internal(w, r, "read flist "+cid, err)
			} else { // the answer has begun: the client sees a short body
				s.log.Warn("failed", "method", r.Method, "path", r.URL.Path, "what", "read flist "+cid, "err", err)
			}
			return
		}
		if _, err := w.Write(data); err != nil {
			return // the client went away
		}
	}
}

func (s *Server) getFlist(w http.ResponseWriter, r *http.Request) {
	key, err := ParseCID(r.PathValue("cid"))
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	rec, ok := s.cat.flist(key)
	if !ok {
		http.Error(w, "flist not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Cache-Control", immutable)
	s.serveFlist(w, r, key, rec)
}

func (s *Server) listFlists(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cat.list())
}

// named finds the flist name points at; when the name is invalid (400) or names nothing
// (404) it answers the request itself and returns ok = false.
func (s *Server) named(w http.ResponseWriter, r *http.Request, name string) (nameRecord, flistRecord, bool) {
	if err := ValidName(name); err != nil {
		s.refuse(w, r, http.StatusBadRequest, err.Error())
		return nameRecord{}, flistRecord{}, false
	}
	n, rec, ok := s.cat.name(name)
	if !ok {
		http.Error(w, "no flist named "+name, http.StatusNotFound)
	}
	return n, rec, ok
}

// getNamedFile serves /USER/NAME.fl and /USER/NAME.fl.md5, as the 0-hub does.
func (s *Server) getNamedFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	base, isMD5 := strings.CutSuffix(file, ".fl.md5")
	if !isMD5 {
		var ok bool
		if base, ok = strings.CutSuffix(file, ".fl"); !ok {
			http.NotFound(w, r)
			return
		}
	}
	n, rec, ok := s.named(w, r, r.PathValue("user")+"/"+base)
	if !ok {
		return
	}
	w.Header().Set("Cache-Control", "no-cache") // names move
	if isMD5 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, rec.MD5)
		return
	}
	s.serveFlist(w, r, n.CID, rec)
}

func (s *Server) getName(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("user") + "/" + r.PathValue("name")
	n, rec, ok := s.named(w, r, name)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, FlistInfo{Name: name, CID: n.CID, Size: rec.Size, Updated: n.Updated})
}

// nameRequest is the body of PUT /names/USER/NAME.
type nameRequest struct {
	CID string `json:"cid"`
}

func (s *Server) putName(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := ValidName(name); err != nil {
		s.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var req nameRequest
	if err := decodeBody(w, r, maxNameBody, &req); err != nil {
		s.refuseBody(w, r, err)
		return
	}
	key, err := ParseCID(req.CID)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	info, prev, err := s.cat.setName(name, key, time.Now().UTC(), r.RemoteAddr)
	if errors.Is(err, ErrNotFound) {
		s.refuse(w, r, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		s.internal(w, r, "set name", err)
		return
	}
	s.log.Info("name set", "name", name, "cid", key, "old", prev, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, info)
}
