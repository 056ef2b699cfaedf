package p2p

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/bloom"
)

// TestOwnHavesNext: a neighbour gets the whole filter first, then only the ids stored
// since, in batches; a new build, or falling behind the log, sends the whole filter again.
func TestOwnHavesNext(t *testing.T) {
	var o ownHaves
	o.changed = make(chan struct{})
	if msg, _, wait := o.next(haveCursor{}); msg != nil || wait == nil {
		t.Fatalf("before the first build: message %v, wait %v", msg, wait)
	}
	o.filter, o.gen, o.capacity = bloom.New(100, haveFalsePositive), 1, 100
	var c haveCursor
	msg, c, _ := o.next(c)
	if typ, _, err := readHaveMessage(bufio.NewReader(bytes.NewReader(msg))); err != nil || typ != haveFull {
		t.Fatalf("first message: type %d, %v; want the whole filter", typ, err)
	}
	if msg, _, wait := o.next(c); msg != nil || wait == nil {
		t.Fatalf("up to date: message %v", msg)
	}
	ids := []flist.BlockID{testID(t, 1, 32), testID(t, 2, 16)}
	o.log = append(o.log, ids...)
	msg, c, _ = o.next(c)
	typ, payload, err := readHaveMessage(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil || typ != haveUpdate {
		t.Fatalf("update: type %d, %v", typ, err)
	}
	got, err := parseHaveUpdate(payload)
	if err != nil || len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Fatalf("update carries %v, %v; want %v", got, err, ids)
	}
	// The log was cut past the cursor (haveLogMax): the whole filter again.
	o.base, o.log = 10, nil
	if msg, _, _ := o.next(c); len(msg) == 0 || msg[0] != haveFull {
		t.Fatalf("behind the log: got %v, want the whole filter", msg)
	}
}

// FuzzReadHaveMessage: any bytes a neighbour sends on a have stream give messages whose
// payload parses (a filter within haveMaxBytes, or ids of valid lengths), a protocol
// error, or an I/O error; never a panic, nor an allocation beyond the bounds.
func FuzzReadHaveMessage(f *testing.F) {
	full, _ := bloom.New(1000, 0.01).MarshalBinary()
	f.Add(haveMessage(haveFull, full))
	f.Add(haveMessage(haveUpdate, append([]byte{32}, bytes.Repeat([]byte{7}, 32)...)))
	f.Add(haveMessage(haveUpdate, []byte{16, 1, 2}))
	f.Add([]byte{3, 0})
	f.Add([]byte{haveFull, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			typ, payload, err := readHaveMessage(r)
			if err != nil {
				if !errors.Is(err, errProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			switch typ {
			case haveFull:
				if fl, err := bloom.Unmarshal(payload, haveMaxBytes); err == nil && fl.Size() > haveMaxBytes {
					t.Fatalf("filter of %d bytes accepted", fl.Size())
				}
			case haveUpdate:
				ids, err := parseHaveUpdate(payload)
				if err != nil && !errors.Is(err, errProtocol) {
					t.Fatalf("update error %v does not wrap errProtocol", err)
				}
				for _, id := range ids {
					if !id.Valid() {
						t.Fatalf("update yields the zero id")
					}
				}
			default:
				t.Fatalf("message of type %d accepted", typ)
			}
		}
	})
}
