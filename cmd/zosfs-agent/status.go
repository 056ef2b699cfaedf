package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent/api"
	"github.com/zosfs/zosfs-agent/internal/units"
)

func newStatusCmd() *cobra.Command {
	var (
		socket string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the daemon's mounts, peers, cache use and bytes fetched by source",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := api.NewClient(socket).Status(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, st)
			}
			if st.PeerID != "" {
				fmt.Fprintf(w, "peer id:  %s\n", st.PeerID)
			}
			for _, a := range st.Addrs {
				fmt.Fprintf(w, "address:  %s\n", a)
			}
			fmt.Fprintf(w, "peers:    %d\n", len(st.Peers))
			for _, h := range st.Hubs {
				fmt.Fprintf(w, "hub:      %s\n", h)
			}
			max := "no bound"
			if st.Cache.Max > 0 {
				max = units.Bytes(st.Cache.Max)
			}
			fmt.Fprintf(w, "cache:    %s in %d blocks (max %s; %s free on its disk, %s kept free)\n", units.Bytes(st.Cache.Bytes), st.Cache.Blocks, max,
				units.Bytes(st.Cache.DiskFree), units.Bytes(st.Cache.MinFree))
			if st.Cache.ReadOnly {
				fmt.Fprintln(w, "cache:    READ-ONLY: the disk was full at start; restart the daemon once there is space")
			}
			fmt.Fprintf(w, "fetched:  %s from cache, %s from peers, %s from hubs\n",
				units.Bytes(st.Fetched.Cache), units.Bytes(st.Fetched.Peers), units.Bytes(st.Fetched.Hub))
			fmt.Fprintf(w, "served:   %s in %d blocks (%d fetched for neighbours), %d flists\n", units.Bytes(st.Served.Bytes), st.Served.Blocks, st.Served.FetchedFor, st.Served.Flists)
			if st.Rejected > 0 || st.Banned > 0 {
				fmt.Fprintf(w, "rejected: %d wrong blocks from neighbours; %d neighbours banned now\n", st.Rejected, st.Banned)
			}
			for _, p := range st.Pinned {
				fmt.Fprintf(w, "pinned:   %s\n", p)
			}
			for _, m := range st.Mounts {
				rw := ""
				if m.Writable {
					rw = " (rw)"
				}
				fmt.Fprintf(w, "mount:    %s %s%s\n", m.Mountpoint, m.CID, rw)
			}
			return nil
		},
	}
	apiFlag(cmd, &socket)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
