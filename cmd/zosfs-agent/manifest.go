package main

import (
	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/flist"
)

func newManifestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "manifest FLIST",
		Short: "Print the canonical TSV listing of an flist (.fl or legacy .flist)",
		Long: `manifest prints one line per entry, sorted by path in byte order, tab-separated:
type (d f l b c p s), path, permission bits (4 octal digits), uid, gid, size, mtime,
block count, first block as hex(id):hex(key) or -, symlink target or major,minor or -.
Paths and targets holding a tab, a newline or a backslash are Go-quoted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := flist.Open(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return flist.WriteManifest(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
}
