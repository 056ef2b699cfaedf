package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/units"
)

// packFlags are pack's flags.
type packFlags struct {
	out     string
	stores  []string
	tags    []string
	workers int
}

func newPackCmd() *cobra.Command {
	var fl packFlags
	cmd := &cobra.Command{
		Use:   "pack [-o OUT.fl] --store [xx-xx=]URL... [--tag KEY=VALUE]... SOURCE",
		Short: "Pack a directory or a tar archive (or - for a tar on stdin) into an flist",
		Long: `pack turns SOURCE — a directory, a .tar or .tar.gz archive, or - for a tar on
standard input — into a v2 .fl flist. File contents are cut into 512 KiB blocks, encoded
(compressed, encrypted with a key derived from the content) in parallel on all cores, and
each distinct block is written once to every store whose range covers it; blocks a store
already has are not written again. The flist's CID is printed as the last line.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPack(cmd.Context(), fl, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.out, "output", "o", "", "flist file to write (default: SOURCE's base name + .fl)")
	f.StringArrayVar(&fl.stores, "store", nil, "block store `[xx-xx=]URL` (dir://, zdb://, s3://); repeatable")
	f.StringArrayVar(&fl.tags, "tag", nil, "tag `KEY=VALUE` written into the flist; repeatable")
	f.IntVar(&fl.workers, "workers", 0, "blocks encoded in parallel (0: one per core)")
	return cmd
}

// runPack packs src into an flist, its blocks into the stores, and prints the CID to
// stdout, a summary to stderr.
func runPack(ctx context.Context, fl packFlags, src string, stdout io.Writer) error {
	if len(fl.stores) == 0 {
		return fmt.Errorf("pack: no --store given: the blocks need a store (e.g. --store dir:///var/lib/zosfs/blocks)")
	}
	tags, err := parseTags(fl.tags)
	if err != nil {
		return err
	}
	out := fl.out
	if out == "" {
		if src == "-" {
			return fmt.Errorf("pack: -o is required when packing from standard input")
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(filepath.Base(filepath.Clean(src)), ".gz"), ".tar"), ".tgz")
		out = base + ".fl"
	}
	router, err := openRouter(ctx, fl.stores)
	if err != nil {
		return err
	}
	defer router.Close()

	progress := newProgressLine()
	start := time.Now()
	stats, err := flist.PackSource(ctx, src, os.Stdin, out, flist.PackConfig{
		Sink:    router.WriteSink(),
		Workers: fl.workers,
		Routes:  router.Routes(),
		Tags:    tags,
		Progress: func(s flist.PackStats) {
			progress.Update("packing: %d files, %s read, %d blocks, %d new (%s stored)",
				s.Files, units.Bytes(s.Bytes), s.Blocks, s.Stored, units.Bytes(s.StoredBytes))
		},
	})
	progress.Done()
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	c, err := flist.FileCIDPath(out)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(os.Stderr, "packed %s -> %s: %d entries, %d files, %s in %d blocks (%d distinct, %d written, %s) in %s (%s/s)\n",
		src, out, stats.Entries, stats.Files, units.Bytes(stats.Bytes), stats.Blocks, stats.UniqueBlocks,
		stats.Stored, units.Bytes(stats.StoredBytes), elapsed.Round(time.Millisecond),
		units.Bytes(int64(float64(stats.Bytes)/max(elapsed.Seconds(), 1e-9))))
	fmt.Fprintln(stdout, c)
	return nil
}

func parseTags(specs []string) (map[string]string, error) {
	tags := map[string]string{}
	for _, s := range specs {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--tag %q: want KEY=VALUE", s)
		}
		tags[k] = v
	}
	return tags, nil
}
