package p2p

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
)

// testID is an id of n bytes, each b.
func testID(t testing.TB, b byte, n int) flist.BlockID {
	t.Helper()
	id, err := flist.ParseBlockID(bytes.Repeat([]byte{b}, n))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestWireRoundTrip(t *testing.T) {
	for _, id := range []flist.BlockID{testID(t, 7, 32), testID(t, 9, 16)} {
		for _, reqID := range []uint64{1, 127, 128, 1 << 40, 1<<64 - 1} {
			for _, flags := range []byte{0, flagFetch} {
				frame := appendRequest(nil, reqID, id, flags)
				if len(frame) > maxRequestFrame {
					t.Fatalf("request frame of %d bytes, bound %d", len(frame), maxRequestFrame)
				}
				gotID, gotBlock, gotFlags, err := readRequest(bufio.NewReader(bytes.NewReader(frame)))
				if err != nil || gotID != reqID || gotBlock != id || gotFlags != flags {
					t.Fatalf("request %d flags %d: got %d %x %d %v", reqID, flags, gotID, gotBlock, gotFlags, err)
				}
			}
			hdr := appendResponseHeader(nil, reqID, statusOK, flist.MaxBlockStored)
			if len(hdr) > maxResponseHeader {
				t.Fatalf("response header of %d bytes, bound %d", len(hdr), maxResponseHeader)
			}
			r, st, n, err := readResponseHeader(bufio.NewReader(bytes.NewReader(hdr)))
			if err != nil || r != reqID || st != statusOK || n != flist.MaxBlockStored {
				t.Fatalf("response %d: got %d %d %d %v", reqID, r, st, n, err)
			}
		}
	}
}

// FuzzReadRequest: any bytes give a request that encodes back to the same frame, a
// protocol error, or an I/O error; never a panic or a large allocation.
func FuzzReadRequest(f *testing.F) {
	f.Add(appendRequest(nil, 1, testID(f, 1, 32), 0))
	f.Add(appendRequest(nil, 300, testID(f, 1, 16), flagFetch))
	f.Add([]byte{0})
	f.Add(bytes.Repeat([]byte{0xff}, 12))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			reqID, id, flags, err := readRequest(r)
			if err != nil {
				if !errors.Is(err, errProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if id.Len() != 16 && id.Len() != 32 {
				t.Fatalf("id of %d bytes accepted", id.Len())
			}
			back := appendRequest(nil, reqID, id, flags)
			r2, id2, f2, err := readRequest(bufio.NewReader(bytes.NewReader(back)))
			if err != nil || r2 != reqID || id2 != id || f2 != flags {
				t.Fatalf("re-encoded request reads as %d %x %d %v", r2, id2, f2, err)
			}
		}
	})
}

// FuzzReadResponseHeader: any bytes give a header within the bounds of its status, a
// protocol error, or an I/O error.
func FuzzReadResponseHeader(f *testing.F) {
	f.Add(appendResponseHeader(nil, 1, statusOK, 524288))
	f.Add(appendResponseHeader(nil, 2, statusNotFound, 0))
	f.Add(appendResponseHeader(nil, 3, statusError, 300))
	f.Add(bytes.Repeat([]byte{0x80}, 11))
	f.Fuzz(func(t *testing.T, in []byte) {
		reqID, status, n, err := readResponseHeader(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			if !errors.Is(err, errProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		var max int
		switch status {
		case statusOK:
			max = flist.MaxBlockStored
		case statusError:
			max = maxErrorMessage
		case statusNotFound:
		default:
			t.Fatalf("status %d accepted", status)
		}
		if n < 0 || n > max {
			t.Fatalf("status %d with %d bytes accepted", status, n)
		}
		// What was read encodes back to a header that reads the same.
		back := appendResponseHeader(nil, reqID, status, n)
		r2, s2, n2, err := readResponseHeader(bufio.NewReader(bytes.NewReader(back)))
		if err != nil || r2 != reqID || s2 != status || n2 != n {
			t.Fatalf("re-encoded header reads as %d %d %d %v", r2, s2, n2, err)
		}
	})
}

// FuzzReadFlistHeader: any bytes give a header within the bounds of its status, a
// protocol error, errTooLarge or an I/O error.
func FuzzReadFlistHeader(f *testing.F) {
	const max = 1 << 20
	f.Add(appendFlistHeader(nil, statusOK, 12345))
	f.Add(appendFlistHeader(nil, statusOK, max+1))
	f.Add(appendFlistHeader(nil, statusNotFound, 0))
	f.Add(appendFlistHeader(nil, statusError, 300))
	f.Add([]byte{0, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		status, n, err := readFlistHeader(bufio.NewReader(bytes.NewReader(in)), max)
		if err != nil {
			if !errors.Is(err, errProtocol) && !errors.Is(err, errTooLarge) && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		var bound int64
		switch status {
		case statusOK:
			bound = max
		case statusError:
			bound = maxErrorMessage
		case statusNotFound:
		default:
			t.Fatalf("status %d accepted", status)
		}
		if n < 0 || n > bound {
			t.Fatalf("status %d with %d bytes accepted", status, n)
		}
		back := appendFlistHeader(nil, status, n)
		s2, n2, err := readFlistHeader(bufio.NewReader(bytes.NewReader(back)), max)
		if err != nil || s2 != status || n2 != n {
			t.Fatalf("re-encoded header reads as %d %d %v", s2, n2, err)
		}
	})
}
