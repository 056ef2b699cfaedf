package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent/api"
)

func newMountCmd() *cobra.Command {
	var (
		socket string
		req    api.MountRequest
	)
	cmd := &cobra.Command{
		Use:   "mount [--rw [--upper DIR]] [--force] REF MOUNTPOINT",
		Short: "Mount an flist (by CID, path, URL or USER/NAME on a hub) through the daemon",
		Long: `mount asks the daemon to serve an flist at MOUNTPOINT as a read-only FUSE filesystem.
The whole tree shows at once; a file's blocks are fetched when it is read. REF is a CID,
a path to an flist file, an http(s) URL, or USER/NAME on the daemon's hub. With --rw a
kernel overlayfs on top takes writes, into --upper DIR (a temporary directory otherwise).
MOUNTPOINT must be an empty directory (--force mounts over one that is not, hiding its
files); "/" and the kernel's own filesystems (/proc, /sys, /dev) are always refused.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Ref, req.Mountpoint = args[0], args[1]
			if isLocalPath(req.Ref) {
				abs, err := filepath.Abs(req.Ref)
				if err != nil {
					return err
				}
				req.Ref = abs
			}
			mp, err := filepath.Abs(req.Mountpoint)
			if err != nil {
				return err
			}
			req.Mountpoint = mp
			if req.UpperDir != "" {
				if req.UpperDir, err = filepath.Abs(req.UpperDir); err != nil {
					return err
				}
			}
			m, err := api.NewClient(socket).Mount(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mounted %s at %s\n", m.CID, m.Mountpoint)
			return nil
		},
	}
	apiFlag(cmd, &socket)
	cmd.Flags().BoolVar(&req.Writable, "rw", false, "writable: a kernel overlayfs on top takes the writes")
	cmd.Flags().BoolVar(&req.Force, "force", false, "mount over a directory that is not empty, hiding its files")
	cmd.Flags().StringVar(&req.UpperDir, "upper", "", "with --rw: the `DIR` that receives the writes (default: a temporary one)")
	return cmd
}

// isLocalPath tells an flist file on this host from a CID, URL or USER/NAME: it exists.
func isLocalPath(ref string) bool {
	if strings.Contains(ref, "://") {
		return false
	}
	fi, err := os.Stat(ref)
	return err == nil && fi.Mode().IsRegular()
}
