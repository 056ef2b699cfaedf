package cache

// WithVerifier returns cfg with verify in place of flist.VerifyBlock, for tests whose
// blocks are random bytes under random ids (the store conformance suite).
func WithVerifier(cfg Config, verify func(id, data []byte) error) Config {
	cfg.verify = verify
	return cfg
}
