package flist

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// extractLegacyDB copies the archive's flistdb.sqlite3 into dst.
func extractLegacyDB(ctx context.Context, archive string, dst io.Writer) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: not a gzip archive: %v", ErrFormat, err)
	}
	defer zr.Close()
	lr := &legacyLimitReader{r: zr, n: maxLegacyArchive}
	tr := tar.NewReader(lr)
	hdr, err := nextLegacyDBMember(ctx, tr)
	if err != nil {
		return err
	}
	if err := checkLegacyDBMember(hdr); err != nil {
		return err
	}
	if err := copyLegacyDBMember(ctx, dst, tr, hdr.Size); err != nil {
		return err
	}
	return drainLegacyArchive(ctx, lr)
}

// nextLegacyDBMember advances tr to the first member named flistdb.sqlite3.
func nextLegacyDBMember(ctx context.Context, tr *tar.Reader) (*tar.Header, error) {
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		switch {
		case err == io.EOF:
			return nil, fmt.Errorf("%w: the archive holds no %s", ErrFormat, legacyDBName)
		case err != nil && first:
			return nil, fmt.Errorf("%w: not a tar archive: %v", ErrFormat, err)
		case err != nil:
			return nil, fmt.Errorf("%w: reading the archive: %v", ErrCorrupt, err)
		}
		if path.Clean(strings.TrimLeft(hdr.Name, "/")) == legacyDBName {
			return hdr, nil
		}
	}
}

// checkLegacyDBMember checks that the database member is a plain regular file within the
// size limit.
func checkLegacyDBMember(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeReg {
		return fmt.Errorf("%w: %s is not a regular file in the archive", ErrCorrupt, legacyDBName)
	}
	for k := range hdr.PAXRecords {
		// A sparse member would expand holes into zeros without reading input.
		if strings.HasPrefix(k, "GNU.sparse.") {
			return fmt.Errorf("%w: %s is a sparse file in the archive", ErrCorrupt, legacyDBName)
		}
	}
	if hdr.Size > maxLegacyDB {
		return fmt.Errorf("%w: %s is %d bytes, more than the limit of %d", ErrCorrupt, legacyDBName, hdr.Size, int64(maxLegacyDB))
	}
	return nil
}

// copyLegacyDBMember copies the size bytes of the current member of tr into dst.
func copyLegacyDBMember(ctx context.Context, dst io.Writer, tr *tar.Reader, size int64) error {
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(tr, buf[:min(left, int64(len(buf)))])
		if err != nil {
			return fmt.Errorf("%w: reading %s: %v", ErrCorrupt, legacyDBName, err)
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return err
		}
		left -= int64(n)
	}
	return nil
}

// drainLegacyArchive reads the rest of the archive so that gzip verifies its checksum of
// the whole.
func drainLegacyArchive(ctx context.Context, lr io.Reader) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := io.CopyN(io.Discard, lr, 16<<20)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: reading the archive after %s: %v", ErrCorrupt, legacyDBName, err)
		}
	}
}

var errLegacyArchiveTooBig = fmt.Errorf("decompressed archive larger than %d bytes", int64(maxLegacyArchive))

// legacyLimitReader fails once more than n bytes were read.
type legacyLimitReader struct {
	r io.Reader
	n int64
}

func (l *legacyLimitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLegacyArchiveTooBig
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
