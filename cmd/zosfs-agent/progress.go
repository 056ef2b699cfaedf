package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/term"
)

// progressLine rewrites one status line on a terminal; elsewhere it prints nothing, so
// that logs and pipes stay clean.
type progressLine struct {
	mu   sync.Mutex
	w    io.Writer
	tty  bool
	last int
}

func newProgressLine() *progressLine {
	return &progressLine{w: os.Stderr, tty: term.IsTerminal(int(os.Stderr.Fd()))}
}

// Update replaces the status line with the formatted text.
func (p *progressLine) Update(format string, args ...any) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf(format, args...)
	pad := p.last - len(s)
	if pad < 0 {
		pad = 0
	}
	fmt.Fprintf(p.w, "\r%s%*s", s, pad, "")
	p.last = len(s)
}

// Done ends the status line so that later output starts on a new line.
func (p *progressLine) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.last > 0 {
		fmt.Fprintln(p.w)
		p.last = 0
	}
}
