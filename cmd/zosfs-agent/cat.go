package main

import (
	"bufio"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/flist"
)

func newCatCmd() *cobra.Command {
	var stores, hubs []string
	cmd := &cobra.Command{
		Use:   "cat [--store URL]... [--hub URL]... FLIST PATH",
		Short: "Write one file of an flist to standard output",
		Long: `cat fetches the blocks of the file at PATH in FLIST, verifies and decodes them and
writes the content to standard output. Blocks come from the --store and --hub given, or
else from the stores the flist's routes name.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f, err := flist.Open(ctx, args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			e, err := flist.LookupPath(ctx, f, args[1])
			if err != nil {
				return err
			}
			src, err := readRouter(ctx, f, stores, hubs)
			if err != nil {
				return err
			}
			defer src.Close()
			w := bufio.NewWriterSize(cmd.OutOrStdout(), flist.BlockSize)
			if err := flist.WriteFile(ctx, w, f, e, src); err != nil {
				return err
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringArrayVar(&stores, "store", nil, "read blocks from this store `[xx-xx=]URL` instead of the flist's routes; repeatable")
	cmd.Flags().StringArrayVar(&hubs, "hub", nil, "read blocks from this hub `URL` (its /blocks store); repeatable")
	return cmd
}
