package flist

import (
	"flag"
	"testing"
)

// fuzzMinimizeRuns is how many runs Go's minimizer may spend on an input that found new
// coverage, for the targets that fuzz whole database files, unless -fuzzminimizetime is
// given (`make fuzz` gives the same).
const fuzzMinimizeRuns = "20x"

// limitFuzzMinimize caps the minimizer of a target that fuzzes whole database files, when
// fuzzing and -fuzzminimizetime was not given. Its default, 60 s per new input, is spent
// removing bytes one at a time and then every range of bytes: a pass quadratic in the
// length of the input, which on an input of kilobytes that takes a millisecond to run
// (the smallest SQLite database with the flist tables is 2 to 7 KB) never ends, so with
// the default both workers are minimizing within seconds and the target runs a few
// inputs a minute. The cost: inputs join the corpus less minimized, and so are crashers
// written to testdata/fuzz.
func limitFuzzMinimize(f *testing.F) {
	if fz := flag.Lookup("test.fuzz"); fz == nil || fz.Value.String() == "" {
		return
	}
	given := false
	flag.Visit(func(fl *flag.Flag) { given = given || fl.Name == "test.fuzzminimizetime" })
	if !given {
		if err := flag.Set("test.fuzzminimizetime", fuzzMinimizeRuns); err != nil {
			f.Fatal(err)
		}
	}
}

// LimitFuzzMinimize is limitFuzzMinimize, for the fuzz targets of package flist_test.
var LimitFuzzMinimize = limitFuzzMinimize
