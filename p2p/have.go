package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/bloom"
)

// HaveProtocolID carries a node's have-filter to a neighbour: a Bloom filter of every
// block in its cache, then the blocks it stores as they arrive. Get asks a neighbour for a
// block only when its filter says it may have it, so finding a block among neighbours
// costs no message and no DHT lookup, whichever flist the block belongs to (a block
// shared by version 1 and version 2 of an flist is found at a node that holds only
// version 1). A false positive costs one "not found" answer, never a wrong byte.
//
// The sender opens one stream to each neighbour that speaks the protocol and keeps it;
// the receiver never writes on it. The stream is a sequence of messages:
//
//	message = type len(payload) payload    len: unsigned varint
//	type    = 1 (payload is a whole filter, bloom.Filter's binary form: it replaces the last one)
//	        | 2 (payload is ids stored since: each a length byte and the id's bytes)
//
// Evicted blocks are not sent: they stay in the neighbour's copy as false positives
// until the sender rebuilds its filter and sends it whole (haveRebuildStale).
const HaveProtocolID protocol.ID = "/zosfs/have/1.0.0"

// Tuning of the have-filters.
const (
	// haveFalsePositive is the rate a filter is sized for: 1.2 bytes per block, and one
	// useless "not found" answer per hundred blocks a neighbour does not have.
	haveFalsePositive = 0.01
	// haveMinKeys is the fewest blocks a filter is sized for (77 KiB), so that a cache
	// that starts empty does not rebuild at every few blocks it stores.
	haveMinKeys = 1 << 16
	// haveHeadroom sizes a filter for this many times the blocks cached, so that it is
	// rebuilt only after the cache has grown that much.
	haveHeadroom = 2
	// haveMaxBytes bounds the filter taken from one peer (4 MiB: 3.5 M blocks, 1.7 TiB of
	// cache); with one filter per connected peer, it bounds what peers make a node hold.
	haveMaxBytes = 4 << 20
	// haveBatchMax bounds the ids in one update message.
	haveBatchMax = 4096
	// haveLogMax bounds the stored ids kept for neighbours that have not been sent them
	// yet; a neighbour further behind gets the whole filter again.
	haveLogMax = 1 << 16
	// haveFlushDelay gathers the blocks stored in a short time into one update: at most
	// one update per neighbour each haveFlushDelay.
	haveFlushDelay = 50 * time.Millisecond
	// haveRebuildStale: the filter is rebuilt from the cache (and sent whole) once the
	// blocks evicted since the last build exceed a quarter of those it holds, so that
	// neighbours' copies keep few stale positives.
	haveRebuildStale = 4
	// haveRebuildEvery bounds how often the filter is rebuilt (each is a walk of the
	// cache index and a whole filter to every neighbour).
	haveRebuildEvery = time.Minute
)

// Message types of HaveProtocolID.
const (
	haveFull   byte = 1
	haveUpdate byte = 2
)

// ownHaves is this node's filter of its cache, and the ids stored since it was built,
// which each neighbour's sender sends on from where it stands (its position in the
// sequence of stored ids).
type ownHaves struct {
	mu       sync.Mutex
	filter   *bloom.Filter
	gen      uint64          // bumped at each build: senders then send the whole filter
	log      []flist.BlockID // stored ids, the first one numbered base
	base     uint64
	evicted  int       // since the last build
	capacity int       // the blocks the filter was sized for
	built    time.Time // the last build
	// changed is closed, and replaced, when the filter changes, to wake the senders.
	changed chan struct{}
}

// haveCursor is where one neighbour's sender stands: the filter generation it sent and
// the number of the next stored id to send.
type haveCursor struct {
	gen, seq uint64
}

// buildHaves makes the filter anew from the node's cache (Service.Have). It runs without the
// lock; ids stored meanwhile are in the log and go into the new filter too.
func (n *Node) buildHaves() {
	o := &n.haves
	o.mu.Lock()
	from := o.base + uint64(len(o.log))
	o.built = time.Now()
	o.mu.Unlock()

	var ids []flist.BlockID
	n.svc.Have(func(id flist.BlockID) bool {
		ids = append(ids, id)
		return n.ctx.Err() == nil
	})
	capacity := max(haveHeadroom*len(ids), haveMinKeys)
	f := bloom.New(capacity, haveFalsePositive)
	for _, id := range ids {
		f.Add(id.Bytes())
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	if from >= o.base {
		for _, id := range o.log[from-o.base:] {
			f.Add(id.Bytes())
		}
	}
	o.filter, o.capacity = f, capacity
	o.gen++
	o.base += uint64(len(o.log))
	o.log = nil
	o.evicted = 0
	o.wake()
	n.log.Debug("have-filter built", "blocks", f.Len(), "bytes", f.Size())
}

// wake tells the senders the filter changed. o.mu is held.
func (o *ownHaves) wake() {
	if o.changed != nil {
		close(o.changed)
	}
	o.changed = make(chan struct{})
}

// Stored tells the node that its cache now holds block id: its neighbours learn it
// within haveFlushDelay.
func (n *Node) Stored(id flist.BlockID) {
	o := &n.haves
	o.mu.Lock()
	defer o.mu.Unlock()
	// The id is logged even before the first build, which adds what was logged while
	// it walked the cache.
	if len(o.log) == haveLogMax { // senders behind get the whole filter
		o.base += uint64(len(o.log))
		o.log = o.log[:0]
	}
	o.log = append(o.log, id)
	if o.filter == nil {
		return
	}
	o.filter.Add(id.Bytes())
	o.wake()
	if o.filter.Len() >= o.capacity {
		n.rebuildSoon() // past the blocks it was sized for, its false positives grow
	}
}

// Evicted tells the node that its cache no longer holds block id. Neighbours are not
// told at once: the filter is rebuilt once enough blocks have left (haveRebuildStale).
func (n *Node) Evicted(flist.BlockID) {
	o := &n.haves
	o.mu.Lock()
	o.evicted++
	stale := o.filter != nil && o.evicted > o.filter.Len()/haveRebuildStale
	o.mu.Unlock()
	if stale {
		n.rebuildSoon()
	}
}

// rebuildSoon asks the rebuild loop for a new filter.
func (n *Node) rebuildSoon() {
	select {
	case n.rebuild <- struct{}{}:
	default: // one is asked already
	}
}

// rebuildLoop builds the filter at start, then again when asked, at most once every
// haveRebuildEvery.
func (n *Node) rebuildLoop() {
	defer n.bg.Done()
	n.buildHaves()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.rebuild:
		}
		n.haves.mu.Lock()
		wait := time.Until(n.haves.built.Add(haveRebuildEvery))
		n.haves.mu.Unlock()
		if wait > 0 {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		n.buildHaves()
	}
}

// next returns the message that brings a neighbour at c up to date, and where it then
// stands; nil and a channel to wait on when it is.
func (o *ownHaves) next(c haveCursor) ([]byte, haveCursor, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	end := o.base + uint64(len(o.log))
	if o.filter == nil { // the first build has not ended
		return nil, c, o.changed
	}
	if c.gen != o.gen || c.seq < o.base {
		full, _ := o.filter.MarshalBinary()
		return haveMessage(haveFull, full), haveCursor{o.gen, end}, nil
	}
	if c.seq == end {
		return nil, c, o.changed
	}
	ids := o.log[c.seq-o.base:]
	ids = ids[:min(len(ids), haveBatchMax)]
	var payload []byte
	for _, id := range ids {
		payload = append(payload, byte(id.Len()))
		payload = append(payload, id.Bytes()...)
	}
	return haveMessage(haveUpdate, payload), haveCursor{c.gen, c.seq + uint64(len(ids))}, nil
}

func haveMessage(typ byte, payload []byte) []byte {
	msg := binary.AppendUvarint([]byte{typ}, uint64(len(payload)))
	return append(msg, payload...)
}

// watchIdentify starts a have-sender for each peer identify shows speaking the
// protocol, until the node closes.
func (n *Node) watchIdentify(sub event.Subscription) {
	defer n.bg.Done()
	defer sub.Close()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerIdentificationCompleted)
			for _, p := range ev.Protocols {
				if p == HaveProtocolID {
					n.startHaveSender(ev.Peer)
					break
				}
			}
		}
	}
}

// startHaveSender starts sending the have-filter to p, unless it is being sent already.
func (n *Node) startHaveSender(p peer.ID) {
	n.haveMu.Lock()
	defer n.haveMu.Unlock()
	if n.haveSending[p] || n.bans.banned(p) || !n.track() {
		return
	}
	n.haveSending[p] = true
	go func() {
		defer n.bg.Done()
		err := n.sendHaves(p)
		n.haveMu.Lock()
		delete(n.haveSending, p)
		n.haveMu.Unlock()
		if err != nil && n.ctx.Err() == nil {
			n.log.Debug("have-filter stream ended", "peer", p.String(), "err", err)
		}
	}()
}

// sendHaves sends p the filter, then the ids stored, until the stream ends (p left, or
// reset it) or the node closes.
func (n *Node) sendHaves(p peer.ID) error {
	s, err := n.host.NewStream(n.ctx, p, HaveProtocolID)
	if err != nil {
		return err
	}
	defer s.Reset()
	// The receiver never writes: a read ends only when the stream does, which a sender
	// waiting for news would not notice otherwise (and would keep p from getting a
	// sender again when it reconnects).
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, s)
		cancel()
	}()
	var c haveCursor
	for {
		msg, next, wait := n.haves.next(c)
		if msg == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-wait:
			}
			select { // gather what comes soon after into one update
			case <-ctx.Done():
				return nil
			case <-time.After(haveFlushDelay):
			}
			continue
		}
		s.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
		if _, err := s.Write(msg); err != nil {
			return err
		}
		n.stats.haveSent.Add(int64(len(msg)))
		c = next
	}
}

// peerHaves is a neighbour's filter as this node holds it, and the stream it came on.
type peerHaves struct {
	filter *bloom.Filter
	stream network.Stream
}

// handleHaveStream reads a neighbour's filter and its updates until the stream ends;
// the filter is then forgotten. A peer has one such stream: a new one replaces the
// last. A peer that breaks the format is banned.
func (n *Node) handleHaveStream(s network.Stream) {
	p := s.Conn().RemotePeer()
	n.haveMu.Lock()
	if old, ok := n.peerHaves[p]; ok {
		old.stream.Reset()
	}
	n.peerHaves[p] = &peerHaves{stream: s}
	n.haveMu.Unlock()
	defer func() {
		s.Reset()
		n.haveMu.Lock()
		if h, ok := n.peerHaves[p]; ok && h.stream == s {
			delete(n.peerHaves, p)
		}
		n.haveMu.Unlock()
	}()
	r := bufio.NewReader(s)
	for {
		typ, payload, err := readHaveMessage(r)
		if err != nil {
			if errors.Is(err, errProtocol) {
				n.penalise(p, err)
			}
			return
		}
		if err := n.applyHaves(p, s, typ, payload); err != nil {
			n.penalise(p, err)
			return
		}
	}
}

// readHaveMessage reads one message; a malformed one is an error wrapping errProtocol.
func readHaveMessage(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: have message length: %w", errProtocol, err)
	}
	limit := uint64(haveMaxBytes + 64)
	if typ == haveUpdate {
		limit = haveBatchMax * 33
	} else if typ != haveFull {
		return 0, nil, fmt.Errorf("%w: have message of type %d", errProtocol, typ)
	}
	if size > limit {
		return 0, nil, fmt.Errorf("%w: have message of %d bytes", errProtocol, size)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return typ, payload, nil
}

// applyHaves takes one message of p's into its filter.
func (n *Node) applyHaves(p peer.ID, s network.Stream, typ byte, payload []byte) error {
	if typ == haveFull {
		f, err := bloom.Unmarshal(payload, haveMaxBytes)
		if err != nil {
			return fmt.Errorf("%w: %w", errProtocol, err)
		}
		n.haveMu.Lock()
		if h, ok := n.peerHaves[p]; ok && h.stream == s {
			h.filter = f
		}
		n.haveMu.Unlock()
		return nil
	}
	ids, err := parseHaveUpdate(payload)
	if err != nil {
		return err
	}
	n.haveMu.Lock()
	defer n.haveMu.Unlock()
	h, ok := n.peerHaves[p]
	if !ok || h.stream != s {
		return nil
	}
	if h.filter == nil {
		return fmt.Errorf("%w: have update before a filter", errProtocol)
	}
	for _, id := range ids {
		h.filter.Add(id.Bytes())
	}
	return nil
}

// parseHaveUpdate splits an update's payload into ids.
func parseHaveUpdate(payload []byte) ([]flist.BlockID, error) {
	var ids []flist.BlockID
	for len(payload) > 0 {
		k := int(payload[0])
		if len(payload) < 1+k {
			return nil, fmt.Errorf("%w: torn id in a have update", errProtocol)
		}
		id, err := flist.ParseBlockID(payload[1 : 1+k])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errProtocol, err)
		}
		ids = append(ids, id)
		payload = payload[1+k:]
	}
	return ids, nil
}

// mayHave reports what p's filter says of block id: known is false when p has sent no
// filter (it does not speak the protocol, or its filter has not arrived yet).
func (n *Node) mayHave(p peer.ID, id flist.BlockID) (maybe, known bool) {
	n.haveMu.Lock()
	defer n.haveMu.Unlock()
	h, ok := n.peerHaves[p]
	if !ok || h.filter == nil {
		return false, false
	}
	return h.filter.Has(id.Bytes()), true
}

// haveBytes is the size of the neighbours' filters this node holds.
func (n *Node) haveBytes() int64 {
	n.haveMu.Lock()
	defer n.haveMu.Unlock()
	var total int64
	for _, h := range n.peerHaves {
		if h.filter != nil {
			total += int64(h.filter.Size())
		}
	}
	return total
}

// startHaves takes the neighbours' filters and, when the node can say what it holds
// (Service.Have), starts the loops that build its own filter and keep neighbours told;
// called by Start once the host runs. A node without Have sends no filter: its
// neighbours then ask it as one whose filter is unknown, rather than never. The first
// build walks the cache in the background, so a large cache does not delay the start.
func (n *Node) startHaves() error {
	n.haves.mu.Lock()
	n.haves.changed = make(chan struct{})
	n.haves.mu.Unlock()
	n.host.SetStreamHandler(HaveProtocolID, n.handleHaveStream)
	if n.svc.Have == nil {
		return nil
	}
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("p2p: identify events: %w", err)
	}
	if !n.track() {
		sub.Close()
		return ErrNotStarted
	}
	go n.watchIdentify(sub)
	if n.track() {
		go n.rebuildLoop()
	}
	return nil
}
