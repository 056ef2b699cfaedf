package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent"
	"github.com/zosfs/zosfs-agent/internal/units"
)

func newDaemonCmd() *cobra.Command {
	var (
		cfg       agent.Config
		cacheMax  string
		hubRate   string
		serveRate string
		logLevel  string
	)
	cmd := &cobra.Command{
		Use:   "daemon [--data DIR] [--hub URL]... [--listen MULTIADDR]... [--bootstrap MULTIADDR]... [--api SOCKET] [--psk FILE] [--cache-max SIZE] [--no-mdns] [--hub-rate RATE] [--serve-rate RATE]",
		Short: "Run the node's agent: block cache, p2p node, FUSE mounts, local API",
		Long: `daemon runs until SIGINT or SIGTERM. It keeps a verified block cache in DIR, serves
flists as lazy read-only FUSE mounts (asked for with 'zosfs-agent mount'), fetches blocks
from the cache, then its neighbours on the site's p2p network (found through mDNS, the
DHT and --bootstrap peers), then the hubs and the flists' routes; it serves every cached
block to its neighbours, and answers the CLI on a unix socket.
A restarted daemon clears the stale mounts a killed one left and mounts them again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			if cacheMax != "" {
				n, err := units.ParseBytes(cacheMax)
				if err != nil {
					return fmt.Errorf("--cache-max: %w", err)
				}
				cfg.CacheMax = n
			}
			for _, r := range []struct {
				flag, value string
				to          *int64
			}{{"--hub-rate", hubRate, &cfg.HubRate}, {"--serve-rate", serveRate, &cfg.ServeRate}} {
				if r.value == "" {
					continue
				}
				n, err := units.ParseBytes(r.value)
				if err != nil {
					return fmt.Errorf("%s: %w", r.flag, err)
				}
				*r.to = n
			}
			d, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	dataFlag(cmd, &cfg.DataDir)
	apiFlag(cmd, &cfg.APISocket)
	f.StringArrayVar(&cfg.Hubs, "hub", nil, "hub base `URL` to fetch flists and blocks from; repeatable")
	f.StringArrayVar(&cfg.Listen, "listen", nil, "p2p `MULTIADDR` to listen on; repeatable (default: all interfaces, TCP and QUIC, random ports)")
	f.StringArrayVar(&cfg.Bootstrap, "bootstrap", nil, "peer `MULTIADDR` (ending in /p2p/ID) to join, for routed sites; repeatable")
	f.StringVar(&cfg.PSKFile, "psk", "", "libp2p private-network key `FILE`: only nodes with the same key can connect")
	f.BoolVar(&cfg.NoMDNS, "no-mdns", false, "do not discover peers on the LAN with mDNS")
	f.DurationVar(&cfg.PeerTimeout, "peer-timeout", 3*time.Second, "how long neighbours get to deliver a block before the hubs are asked")
	f.StringVar(&cacheMax, "cache-max", "", "bound the block cache (e.g. 20GiB, 500MB); pinned blocks are never evicted (default: no bound)")
	f.StringVar(&hubRate, "hub-rate", "", "bound the bytes per second fetched from hubs and stores, e.g. 2MiB (default: no bound)")
	f.StringVar(&serveRate, "serve-rate", "", "bound the bytes per second served to neighbours, e.g. 50MiB (default: no bound)")
	f.DurationVar(&cfg.FetchTimeout, "fetch-timeout", 20*time.Second, "bound on one attempt to fetch a block from a hub or store")
	f.DurationVar(&cfg.ReadTimeout, "read-timeout", 60*time.Second, "bound on a read through a mount; past it the read fails with EIO")
	f.StringVar(&cfg.MetricsAddr, "metrics", "", "serve Prometheus metrics at `ADDR` (host:port), GET /metrics (default: off)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
