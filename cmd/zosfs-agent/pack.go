package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/units"
)

func newPackCmd() *cobra.Command {
	var (
		out     string
		stores  []string
		tags    []string
		workers int
	)
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
			ctx := cmd.Context()
			src := args[0]
			if len(stores) == 0 {
				return fmt.Errorf("pack: no --store given: the blocks need a store (e.g. --store dir:///var/lib/zosfs/blocks)")
			}
			tagMap, err := parseTags(tags)
			if err != nil {
				return err
			}
			if out == "" {
				if src == "-" {
					return fmt.Errorf("pack: -o is required when packing from standard input")
				}
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(filepath.Base(filepath.Clean(src)), ".gz"), ".tar"), ".tgz")
				out = base + ".fl"
			}
			router, err := openRouter(ctx, stores)
			if err != nil {
				return err
			}
			defer router.Close()

			progress := newProgressLine()
			start := time.Now()
			cfg := flist.PackConfig{
				Sink:    router.WriteSink(),
				Workers: workers,
				Routes:  router.Routes(),
				Tags:    tagMap,
				Progress: func(s flist.PackStats) {
					progress.Update("packing: %d files, %s read, %d blocks, %d new (%s stored)",
						s.Files, units.Bytes(s.Bytes), s.Blocks, s.Stored, units.Bytes(s.StoredBytes))
				},
			}
			var stats flist.PackStats
			switch fi, statErr := os.Stat(src); {
			case src == "-":
				stats, err = flist.PackTar(ctx, os.Stdin, out, cfg)
			case statErr != nil:
				return statErr
			case fi.IsDir():
				stats, err = flist.PackDir(ctx, src, out, cfg)
			default:
				f, openErr := os.Open(src)
				if openErr != nil {
					return openErr
				}
				stats, err = flist.PackTar(ctx, f, out, cfg)
				f.Close()
			}
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
			fmt.Fprintln(cmd.OutOrStdout(), c)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "output", "o", "", "flist file to write (default: SOURCE's base name + .fl)")
	f.StringArrayVar(&stores, "store", nil, "block store `[xx-xx=]URL` (dir://, zdb://, s3://); repeatable")
	f.StringArrayVar(&tags, "tag", nil, "tag `KEY=VALUE` written into the flist; repeatable")
	f.IntVar(&workers, "workers", 0, "blocks encoded in parallel (0: one per core)")
	return cmd
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
