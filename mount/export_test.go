package mount

// ToErrno exposes the errno mapper to the external tests.
var ToErrno = toErrno
