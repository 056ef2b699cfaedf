package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent"
	"github.com/zosfs/zosfs-agent/internal/units"
)

// daemonFlags are the daemon's flags: the agent's configuration, with the sizes and the
// log level as typed.
type daemonFlags struct {
	cfg       agent.Config
	cacheMax  string
	minFree   string
	hubRate   string
	serveRate string
	logLevel  string
}

func newDaemonCmd() *cobra.Command {
	var fl daemonFlags
	cmd := &cobra.Command{
		Use:   "daemon [--data DIR] [--hub URL]... [--listen MULTIADDR]... [--bootstrap MULTIADDR]... [--api SOCKET] [--psk FILE] [--cache-max SIZE] [--cache-min-free SIZE] [--no-mdns] [--hub-rate RATE] [--serve-rate RATE]",
		Short: "Run the node's agent: block cache, p2p node, FUSE mounts, local API",
		Long: `daemon runs until SIGINT or SIGTERM. It keeps a verified block cache in DIR, serves
flists as lazy read-only FUSE mounts (asked for with 'zosfs-agent mount'), fetches blocks
from the cache, then its neighbours on the site's p2p network (found through mDNS, the
DHT and --bootstrap peers), then the hubs and the flists' routes; it serves every cached
block to its neighbours, and answers the CLI on a unix socket.
A restarted daemon clears the stale mounts a killed one left and mounts them again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDaemon(cmd.Context(), fl) },
	}
	f := cmd.Flags()
	dataFlag(cmd, &fl.cfg.DataDir)
	apiFlag(cmd, &fl.cfg.APISocket)
	f.StringArrayVar(&fl.cfg.Hubs, "hub", nil, "hub base `URL` to fetch flists and blocks from; repeatable")
	f.StringArrayVar(&fl.cfg.Listen, "listen", nil, "p2p `MULTIADDR` to listen on; repeatable (default: all interfaces, TCP and QUIC, random ports)")
	f.StringArrayVar(&fl.cfg.Bootstrap, "bootstrap", nil, "peer `MULTIADDR` (ending in /p2p/ID) to join, for routed sites; repeatable")
	f.StringVar(&fl.cfg.PSKFile, "psk", "", "libp2p private-network key `FILE`: only nodes with the same key can connect")
	f.BoolVar(&fl.cfg.NoMDNS, "no-mdns", false, "do not discover peers on the LAN with mDNS")
	f.DurationVar(&fl.cfg.PeerTimeout, "peer-timeout", agent.DefaultPeerTimeout, "how long neighbours get to deliver a block before the hubs are asked")
	f.StringVar(&fl.cacheMax, "cache-max", "", "bound the block cache (e.g. 20GiB, 500MB, or none); pinned blocks are never evicted (default: 80% of the disk's free space at start)")
	f.StringVar(&fl.minFree, "cache-min-free", "", "free space the cache leaves on its disk, evicting to keep it (e.g. 2GiB, or none) (default: the smaller of 1GiB and 5% of the disk)")
	f.StringVar(&fl.hubRate, "hub-rate", "", "bound the bytes per second fetched from hubs and stores, e.g. 2MiB (default: no bound)")
	f.StringVar(&fl.serveRate, "serve-rate", "", "bound the bytes per second served to neighbours, e.g. 50MiB (default: no bound)")
	f.DurationVar(&fl.cfg.FetchTimeout, "fetch-timeout", agent.DefaultFetchTimeout, "bound on one attempt to fetch a block from a hub or store")
	f.DurationVar(&fl.cfg.ReadTimeout, "read-timeout", agent.DefaultReadTimeout, "bound on a read through a mount; past it the read fails with EIO")
	f.StringVar(&fl.cfg.MetricsAddr, "metrics", "", "serve Prometheus metrics at `ADDR` (host:port), GET /metrics (default: off)")
	f.StringVar(&fl.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// runDaemon reads the flags as typed into the agent's configuration and runs the agent
// until ctx ends.
func runDaemon(ctx context.Context, fl daemonFlags) error {
	cfg := fl.cfg
	logger, err := newLogger(fl.logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	for _, size := range []struct {
		flag, value string
		to          *int64
		none        bool // "none" is a value: no bound
	}{
		{"--cache-max", fl.cacheMax, &cfg.CacheMax, true},
		{"--cache-min-free", fl.minFree, &cfg.CacheMinFree, true},
		{"--hub-rate", fl.hubRate, &cfg.HubRate, false},
		{"--serve-rate", fl.serveRate, &cfg.ServeRate, false},
	} {
		if size.value == "" {
			continue
		}
		if size.none && size.value == "none" {
			*size.to = -1
			continue
		}
		n, err := units.ParseBytes(size.value)
		if err != nil {
			return fmt.Errorf("%s: %w", size.flag, err)
		}
		*size.to = n
	}
	d, err := agent.New(cfg)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
