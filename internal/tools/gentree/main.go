// Command gentree writes a reproducible tree of mixed file sizes for benchmarks: many
// small files, some medium ones, a few large ones, with content that is part text-like
// (compressible) and part random, as in real container images.
//
//	go run ./internal/tools/gentree -size 1GiB -seed 1 DIR
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/zosfs/zosfs-agent/internal/units"
)

func main() {
	size := flag.String("size", "1GiB", "total content size (B, KiB, MiB, GiB)")
	seed := flag.Uint64("seed", 1, "random seed: the same seed gives the same tree")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gentree [-size 1GiB] [-seed N] DIR")
		os.Exit(2)
	}
	total, err := units.ParseBytes(*size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gentree:", err)
		os.Exit(2)
	}
	n, err := generate(flag.Arg(0), total, *seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gentree:", err)
		os.Exit(1)
	}
	fmt.Printf("%d files, %d bytes in %s\n", n, total, flag.Arg(0))
}

// words make up the text-like half of each file: compressible, yet never the same block
// twice, since they are drawn at random.
var words = strings.Fields("func main return if else for range struct interface package import " +
	"error nil string int byte the of and to in is that it with as for was on are be by " +
	"{ } ( ) := = == != // /* */ 0 1 2 10 100 true false")

// generate writes files until total bytes are written: a third of the bytes in small files
// (1-64 KiB), a third in medium ones (64 KiB - 4 MiB), a third in large ones (8-64 MiB),
// in directories of up to 100 files. Each file is half text-like, half random.
func generate(dir string, total int64, seed uint64) (int, error) {
	rng := rand.New(rand.NewPCG(seed, seed*31+7))
	classes := []struct{ lo, hi, written int64 }{{lo: 1 << 10, hi: 64 << 10}, {lo: 64 << 10, hi: 4 << 20}, {lo: 8 << 20, hi: 64 << 20}}
	buf := make([]byte, 0, 64<<20)
	files := 0
	for written := int64(0); written < total; files++ {
		c := &classes[0]
		for i := range classes {
			if classes[i].written < c.written {
				c = &classes[i]
			}
		}
		size := min(c.lo+rng.Int64N(c.hi-c.lo), total-written)
		buf = buf[:0]
		for int64(len(buf)) < size/2 {
			buf = append(buf, words[rng.IntN(len(words))]...)
			buf = append(buf, ' ')
		}
		buf = buf[:size/2]
		for int64(len(buf)) < size {
			v := rng.Uint64()
			buf = append(buf, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
		}
		buf = buf[:size]
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", files/100))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return files, err
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", files)), buf, 0o644); err != nil {
			return files, err
		}
		c.written += size
		written += size
	}
	return files, nil
}
