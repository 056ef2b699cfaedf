package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/hub"
	"github.com/zosfs/zosfs-agent/internal/units"
	"github.com/zosfs/zosfs-agent/store"
)

// tokenEnv names the environment variable push reads the hub token from when no
// --token-file is given.
const tokenEnv = "ZOSFS_HUB_TOKEN"

// pushFlags are push's flags.
type pushFlags struct {
	hubURL, tokenFile, name string
	stores                  []string
}

func newPushCmd() *cobra.Command {
	var fl pushFlags
	cmd := &cobra.Command{
		Use:   "push --hub URL [--token-file F] [--name USER/NAME] [--store URL]... FLIST|SOURCE",
		Short: "Publish an flist to a hub, or pack a directory or tar straight to a hub",
		Long: `push publishes to the hub at --hub. Given an existing flist (a file named *.fl or
*.flist, or any SQLite .fl file), it asks the hub which of the flist's blocks it lacks,
reads only those from the --store given (or the flist's own routes), uploads them, then
uploads the flist unchanged. Given a directory, a .tar / .tar.gz, or - (a tar on standard
input), it packs it as pack does, writing the blocks the hub lacks straight to the hub,
with the route HUB/blocks, then uploads the flist. With --name the hub points USER/NAME
at it. The token comes from --token-file or $ZOSFS_HUB_TOKEN. The CID is printed as the
last line; a summary goes to standard error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPush(cmd.Context(), fl, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.hubURL, "hub", "", "the hub's `URL` (http(s)://host:port)")
	f.StringVar(&fl.tokenFile, "token-file", "", "`FILE` holding the hub's token (default: $"+tokenEnv+")")
	f.StringVar(&fl.name, "name", "", "point `USER/NAME` at the flist on the hub")
	f.StringArrayVar(&fl.stores, "store", nil, "read an existing flist's blocks from this store `[xx-xx=]URL` instead of its routes; repeatable")
	return cmd
}

// runPush publishes src (an flist, or a source to pack) to the hub and prints its CID
// to stdout, a summary to stderr.
func runPush(ctx context.Context, fl pushFlags, src string, stdout io.Writer) error {
	if fl.hubURL == "" {
		return fmt.Errorf("push: --hub URL is required")
	}
	if fl.name != "" {
		if err := hub.ValidName(fl.name); err != nil {
			return fmt.Errorf("--name: %w", err)
		}
	}
	token, err := pushToken(fl.tokenFile)
	if err != nil {
		return err
	}
	client, err := hub.NewClient(fl.hubURL, token, nil)
	if err != nil {
		return err
	}
	existing, err := isFlistFile(src)
	if err != nil {
		return err
	}
	start := time.Now()
	progress := newProgressLine()
	defer progress.Done()
	var summary, flPath string
	if existing {
		flPath = src
		summary, err = pushBlocks(ctx, client, src, fl.stores, progress)
	} else {
		tmp, terr := os.MkdirTemp("", "zosfs-push-*")
		if terr != nil {
			return terr
		}
		defer os.RemoveAll(tmp)
		flPath = filepath.Join(tmp, "push.fl")
		summary, err = packToHub(ctx, client, src, flPath, progress)
	}
	if err != nil {
		return fmt.Errorf("push %s: %w", src, err)
	}
	local, err := flist.FileCIDPath(flPath)
	if err != nil {
		return err
	}
	f, err := os.Open(flPath)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	progress.Update("uploading the flist (%s)", units.Bytes(fi.Size()))
	c, err := client.UploadFlist(ctx, f, fl.name)
	if err != nil {
		return fmt.Errorf("push %s: upload flist: %w", src, err)
	}
	if c != local.String() {
		return fmt.Errorf("push %s: the hub names the flist %s, its CID is %s", src, c, local)
	}
	progress.Done()
	as := ""
	if fl.name != "" {
		as = " as " + fl.name
	}
	fmt.Fprintf(os.Stderr, "pushed %s to %s%s: %s, flist %s, in %s\n",
		src, client.String(), as, summary, units.Bytes(fi.Size()), time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(stdout, c)
	return nil
}

// pushToken reads the token from the file, or else from $ZOSFS_HUB_TOKEN.
func pushToken(file string) (string, error) {
	if file != "" {
		return readToken(file)
	}
	if tok := strings.TrimSpace(os.Getenv(tokenEnv)); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("push: no token: give --token-file FILE or set %s", tokenEnv)
}

// isFlistFile tells an existing flist from a source to pack: a file named *.fl or *.flist,
// or one that starts as SQLite does, is an flist (and must open as one). Any other file
// is a tar; a gzip file is taken as a .tar.gz unless named *.flist, since telling a legacy
// flist from a tar.gz needs decompressing the whole archive.
func isFlistFile(src string) (bool, error) {
	if src == "-" {
		return false, nil
	}
	fi, err := os.Stat(src)
	if err != nil {
		return false, err
	}
	if fi.IsDir() {
		return false, nil
	}
	if ext := filepath.Ext(src); ext == ".fl" || ext == ".flist" {
		return true, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 16)
	n, _ := io.ReadFull(f, head)
	return bytes.Equal(head[:n], []byte("SQLite format 3\x00")), nil
}

// packToHub packs src (a directory, a tar file or - for a tar on stdin) into out, writing
// the blocks the hub lacks to the hub.
func packToHub(ctx context.Context, client *hub.Client, src, out string, progress *progressLine) (string, error) {
	cfg := flist.PackConfig{
		Sink:   client,
		Routes: []flist.Route{{Start: 0x00, End: 0xff, URL: store.StripPassword(client.String()) + "/blocks"}},
		Progress: func(s flist.PackStats) {
			progress.Update("packing: %d files, %s read, %d blocks, %d uploaded (%s)",
				s.Files, units.Bytes(s.Bytes), s.Blocks, s.Stored, units.Bytes(s.StoredBytes))
		},
	}
	stats, err := flist.PackSource(ctx, src, os.Stdin, out, cfg)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("packed %d entries, %d files, %s in %d blocks (%d distinct), %d blocks uploaded (%s)",
		stats.Entries, stats.Files, units.Bytes(stats.Bytes), stats.Blocks, stats.UniqueBlocks,
		stats.Stored, units.Bytes(stats.StoredBytes)), nil
}

// pushBlocks uploads the blocks of the flist at path that the hub lacks, reading them from
// the --store given or the flist's routes.
func pushBlocks(ctx context.Context, client *hub.Client, path string, stores []string, progress *progressLine) (string, error) {
	f, err := flist.Open(ctx, path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	progress.Update("asking the hub which blocks it lacks")
	missing, distinct, err := client.MissingBlocks(ctx, f)
	if err != nil {
		return "", err
	}
	var done int
	var sent int64
	if len(missing) > 0 {
		src, err := readRouter(ctx, f, stores, nil)
		if err != nil {
			return "", err
		}
		defer src.Close()
		done, sent, err = client.PushBlocks(ctx, missing, src, func(n int, b int64) {
			progress.Update("uploading blocks: %d of %d (%s)", n, len(missing), units.Bytes(b))
		})
		if err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d distinct blocks, %d missing on the hub, %d blocks uploaded (%s)",
		distinct, len(missing), done, units.Bytes(sent)), nil
}
