package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent/api"
)

func newPeersCmd() *cobra.Command {
	var (
		socket string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "peers [--json]",
		Short: "List the daemon's neighbours on the site's p2p network",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := api.NewClient(socket).Status(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, st.Peers)
			}
			fmt.Fprintf(w, "this node: %s\n", st.PeerID)
			for _, a := range st.Addrs {
				fmt.Fprintf(w, "  %s\n", a)
			}
			fmt.Fprintf(w, "%d peers\n", len(st.Peers))
			for _, p := range st.Peers {
				fmt.Fprintln(w, p.ID)
			}
			return nil
		},
	}
	apiFlag(cmd, &socket)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
