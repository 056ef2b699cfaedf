package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/store"
)

func newHubCmd() *cobra.Command {
	var dataDir, listen, tokenFile, s3URL, logLevel string
	cmd := &cobra.Command{
		Use:   "hub --data DIR [--listen ADDR] [--token-file F] [--s3 s3://key:secret@host:port/bucket]",
		Short: "Run a hub: serve flists and blocks over HTTP, take pushes",
		Long: `hub serves blocks (GET /blocks/<hex[0:2]>/<hex>, the layout flist routes and rfs read)
and flists (GET /flists/<cid>, GET /USER/NAME.fl) over HTTP, and takes pushes: blocks
checked against their ids, flists checked to be readable. Blocks and flist files are
kept in DIR/blocks, or in an S3 bucket with --s3; the names and the list of flists in
DIR. Writes need the token in --token-file (sent as Authorization: Bearer TOKEN);
without one the hub is read-only. It runs until interrupted (SIGINT, SIGTERM).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if dataDir == "" {
				return fmt.Errorf("hub: --data DIR is required")
			}
			logger, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			var token string
			if tokenFile != "" {
				var err error
				if token, err = readToken(tokenFile); err != nil {
					return err
				}
			}
			var blocks store.Store
			if s3URL != "" {
				if !strings.HasPrefix(s3URL, "s3://") && !strings.HasPrefix(s3URL, "s3s://") {
					return fmt.Errorf("--s3 %q: want s3://key:secret@host:port/bucket", store.StripPassword(s3URL))
				}
				blocks, err = store.Open(ctx, s3URL)
			} else {
				blocks, err = store.NewDir(filepath.Join(dataDir, "blocks"))
			}
			if err != nil {
				return err
			}
			defer blocks.Close()
			srv, err := hub.New(hub.Config{Dir: dataDir, Blocks: blocks, Listen: listen, Token: token, Logger: logger})
			if err != nil {
				return err
			}
			logger.Info("hub", "data", dataDir, "blocks", blocks.String())
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", "", "data `DIR`: names.json, flists.json and (without --s3) blocks/")
	f.StringVar(&listen, "listen", hub.DefaultListen, "`ADDR` to listen on (host:port)")
	f.StringVar(&tokenFile, "token-file", "", "`FILE` holding the token that authorises writes (none: read-only hub)")
	f.StringVar(&s3URL, "s3", "", "keep blocks and flists in this S3 bucket `s3://key:secret@host:port/bucket` instead of DIR/blocks")
	f.StringVar(&logLevel, "log-level", "info", "log `LEVEL`: debug (every request), info, warn, error")
	return cmd
}

// readToken reads a token file: its content without surrounding white space, not empty.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s: want one token on one line", path)
	}
	return tok, nil
}
