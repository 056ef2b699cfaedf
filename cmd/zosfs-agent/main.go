// Command zosfs-agent ships filesystem images (flists) to the nodes of an edge site: it
// packs and inspects flists and, as a daemon, serves them lazily through FUSE.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zosfs-agent:", err)
		os.Exit(1)
	}
}
