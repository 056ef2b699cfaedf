package main

import (
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "zosfs-agent",
		Short: "Ship flist filesystem images to edge nodes: pack, inspect, serve lazily",
		Long: `zosfs-agent packs directory trees and tar archives into flists (small metadata
databases whose file contents live as encrypted, content-addressed blocks in stores),
and reads the flists that exist today: rfs .fl files and legacy .flist archives.`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("zosfs-agent {{.Version}}\n")
	root.AddCommand(
		newPackCmd(),
		newManifestCmd(),
		newInspectCmd(),
		newCatCmd(),
		newHubCmd(),
		newPushCmd(),
		newDaemonCmd(),
		newMountCmd(),
		newUmountCmd(),
		newPullCmd(),
		newStatusCmd(),
		newPeersCmd(),
	)
	return root
}
