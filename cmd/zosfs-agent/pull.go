package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/internal/units"
)

func newPullCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Fetch every block of an flist into the daemon's cache and pin it",
		Long: `pull asks the daemon to fetch the flist REF (CID, path, URL or USER/NAME) and all
its blocks into the cache, pinned so that they are never evicted. Interrupted, it keeps
what it fetched: running it again fetches the rest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if isLocalPath(ref) {
				abs, err := filepath.Abs(ref)
				if err != nil {
					return err
				}
				ref = abs
			}
			progress := newProgressLine()
			last, err := api.NewClient(socket).Pull(cmd.Context(), ref, func(p api.PullProgress) {
				progress.Update("pulling %s: %d/%d blocks, %s fetched", p.CID, p.Blocks, p.TotalBlocks, units.Bytes(p.Bytes))
			})
			progress.Done()
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "pulled %s: %d blocks, %s fetched\n", last.CID, last.TotalBlocks, units.Bytes(last.Bytes))
			fmt.Fprintln(cmd.OutOrStdout(), last.CID)
			return nil
		},
	}
	apiFlag(cmd, &socket)
	return cmd
}
