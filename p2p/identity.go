package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// identityFile is the node's private key, under Config.DataDir: libp2p's protobuf
// encoding of an Ed25519 key (crypto.MarshalPrivateKey).
const identityFile = "p2p/identity.key"

// loadIdentity reads the node's key from dataDir, creating it if missing; with no
// dataDir it returns a new random key.
func loadIdentity(dataDir string, log *slog.Logger) (crypto.PrivKey, error) {
	if dataDir == "" {
		priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
		return priv, err
	}
	path := filepath.Join(dataDir, identityFile)
	priv, err := readIdentity(path, log)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return priv, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	priv, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	// Write a temporary file and link it into place, so that the key file only ever
	// appears complete, and a key created meanwhile by another process is kept.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identity-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(raw)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readIdentity(path, log)
		}
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	log.Info("created a new p2p identity", "file", path)
	return priv, nil
}

func readIdentity(path string, log *slog.Logger) (crypto.PrivKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	priv, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		// Never replace a damaged identity silently: the site knows the node by it.
		return nil, fmt.Errorf("%s: %w (remove the file to create a new identity)", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("p2p identity file is readable by others", "file", path, "mode", fi.Mode().Perm().String())
	}
	return priv, nil
}
