package main

import (
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent/api"
)

func newUmountCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount an flist mounted by the daemon",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mp, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			return api.NewClient(socket).Unmount(cmd.Context(), mp)
		},
	}
	apiFlag(cmd, &socket)
	return cmd
}
