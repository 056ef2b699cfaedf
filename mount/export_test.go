package mount

// ToErrno exposes the errno mapper to the external tests.
var ToErrno = toErrno

// MaxIdleReaders exposes how many idle files keep their read state.
const MaxIdleReaders = maxIdleReaders
