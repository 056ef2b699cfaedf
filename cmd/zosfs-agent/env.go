package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/agent"
	"github.com/zosfs/zosfs-agent/agent/api"
)

// apiFlag binds --api, defaulting to $ZOSFS_API, then the standard socket.
func apiFlag(cmd *cobra.Command, socket *string) {
	def := os.Getenv("ZOSFS_API")
	if def == "" {
		def = api.DefaultSocket
	}
	cmd.Flags().StringVar(socket, "api", def, "the daemon's API `SOCKET` (env ZOSFS_API)")
}

// dataFlag binds --data, defaulting to $ZOSFS_DATA, then the standard directory.
func dataFlag(cmd *cobra.Command, dir *string) {
	def := os.Getenv("ZOSFS_DATA")
	if def == "" {
		def = agent.DefaultDataDir
	}
	cmd.Flags().StringVar(dir, "data", def, "data `DIR`: cache, flists, state (env ZOSFS_DATA)")
}

// newLogger is the text logger on stderr at the --log-level given.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// printJSON writes v to w as indented JSON: the --json output of the commands.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
