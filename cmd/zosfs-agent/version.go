package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit are set when building (make build: -X main.version=...). Empty,
// they come from the build information, which has the commit only when Go stamped it
// (-buildvcs).
var version, commit string

// versionString says which build this is: version, commit and Go toolchain.
func versionString() string {
	v, rev, dirty := version, commit, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && rev == "":
				rev = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				dirty = ", modified"
			}
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("%s (commit %s%s, %s %s/%s)", v, rev, dirty, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
