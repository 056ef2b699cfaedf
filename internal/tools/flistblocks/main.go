// Command flistblocks prints the content block ids (hex) of files in an flist, one per
// line, in file order — for benchmarks that fetch the same blocks from a hub with curl.
//
//	go run ./internal/tools/flistblocks [-first] FLIST PATH...
//
// With -first only the first block of each file is printed (files without content print
// nothing).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/zosfs/zosfs-agent/flist"
)

func main() {
	first := flag.Bool("first", false, "print only the first block of each file")
	flag.Parse()
	if flag.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "usage: flistblocks [-first] FLIST PATH...")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Args()[1:], *first); err != nil {
		fmt.Fprintln(os.Stderr, "flistblocks:", err)
		os.Exit(1)
	}
}

func run(path string, files []string, first bool) error {
	ctx := context.Background()
	f, err := flist.Open(ctx, path)
	if err != nil {
		return err
	}
	defer f.Close()
	out := make([]byte, 0, 1<<16)
	for _, p := range files {
		e, err := flist.LookupPath(ctx, f, p)
		if err != nil {
			return err
		}
		if e.Type != flist.TypeFile {
			return fmt.Errorf("%s: not a regular file", p)
		}
		blocks, err := f.Blocks(ctx, e.Ino)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if first && len(blocks) > 1 {
			blocks = blocks[:1]
		}
		for _, b := range blocks {
			out = fmt.Appendf(out, "%x\n", b.ID)
		}
	}
	_, err = os.Stdout.Write(out)
	return err
}
