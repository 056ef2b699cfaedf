package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/zosfs/zosfs-agent/flist"
	"github.com/zosfs/zosfs-agent/store"
)

// openRouter opens the stores named by --store specs ([xx-xx=]URL).
func openRouter(ctx context.Context, specs []string) (*store.Router, error) {
	routes := make([]flist.Route, 0, len(specs))
	for _, s := range specs {
		r, err := store.ParseRouteSpec(s)
		if err != nil {
			return nil, fmt.Errorf("--store %q: %w", store.StripPassword(s), err)
		}
		routes = append(routes, r)
	}
	return store.NewRouter(ctx, routes)
}

// readRouter opens the stores to read an flist's blocks from: the --store and --hub
// flags if given, else the routes written in the flist.
func readRouter(ctx context.Context, f flist.Flist, specs, hubs []string) (*store.Router, error) {
	for _, h := range hubs {
		specs = append(specs, strings.TrimRight(h, "/")+"/blocks")
	}
	if len(specs) > 0 {
		return openRouter(ctx, specs)
	}
	routes, err := f.Routes(ctx)
	if err != nil {
		return nil, err
	}
	if len(routes) == 0 {
		return nil, fmt.Errorf("the flist names no store: give --store or --hub")
	}
	return store.NewRouter(ctx, routes)
}
