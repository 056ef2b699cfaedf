package main

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/internal/units"
)

// inspection is what inspect reports; its JSON form is stable for scripts.
type inspection struct {
	CID          string            `json:"cid"`
	Format       flist.Format      `json:"format"`
	Entries      int               `json:"entries"`
	ByType       map[string]int    `json:"by_type"`
	TotalSize    uint64            `json:"total_size"`
	Blocks       int               `json:"blocks"`
	UniqueBlocks int               `json:"unique_blocks"`
	Routes       []flist.Route     `json:"routes"`
	Tags         map[string]string `json:"tags"`
}

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect [--json] FLIST",
		Short: "Summarise an flist: CID, format, counts, sizes, blocks, routes, tags",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := flist.FileCIDPath(args[0])
			if err != nil {
				return err
			}
			f, err := flist.Open(ctx, args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			in := inspection{CID: c.String(), Format: f.Format(), ByType: map[string]int{}}
			unique := map[flist.BlockID]bool{}
			err = flist.Walk(ctx, f, func(_ string, e flist.Entry) error {
				in.Entries++
				in.ByType[string(e.Type.Letter())]++
				if e.Type == flist.TypeFile {
					in.TotalSize += e.Size
					blocks, err := f.Blocks(ctx, e.Ino)
					if err != nil {
						return err
					}
					in.Blocks += len(blocks)
					for _, b := range blocks {
						unique[b.ID] = true
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			in.UniqueBlocks = len(unique)
			if in.Routes, err = f.Routes(ctx); err != nil {
				return err
			}
			if in.Tags, err = f.Tags(ctx); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, in)
			}
			fmt.Fprintf(w, "cid:      %s\nformat:   %s\n", in.CID, in.Format)
			fmt.Fprintf(w, "entries:  %d (", in.Entries)
			for i, t := range []string{"d", "f", "l", "b", "c", "p", "s"} {
				if i > 0 {
					fmt.Fprint(w, ", ")
				}
				fmt.Fprintf(w, "%s %d", typeNames[t], in.ByType[t])
			}
			fmt.Fprintf(w, ")\nsize:     %s (%d bytes)\n", units.Bytes(int64(in.TotalSize)), in.TotalSize)
			fmt.Fprintf(w, "blocks:   %d (%d distinct)\n", in.Blocks, in.UniqueBlocks)
			for _, r := range in.Routes {
				fmt.Fprintf(w, "route:    %02x-%02x %s\n", r.Start, r.End, r.URL)
			}
			keys := make([]string, 0, len(in.Tags))
			for k := range in.Tags {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(w, "tag:      %s=%s\n", k, in.Tags[k])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

var typeNames = map[string]string{
	"d": "dirs", "f": "files", "l": "symlinks", "b": "block devs", "c": "char devs", "p": "fifos", "s": "sockets",
}
