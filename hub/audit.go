package hub

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// auditFile, in Config.Dir, is the hub's record of every write it accepted: one JSON
// object a line, appended and fsynced before the write is answered. names.json says where
// a name points now; the audit file says where it pointed before, who moved it and when.
const auditFile = "audit.jsonl"

// auditRecord is one line of the audit file.
type auditRecord struct {
	Time   time.Time `json:"time"`
	Action string    `json:"action"` // "flist" (an flist stored) or "name" (a name set)
	Name   string    `json:"name,omitempty"`
	// Old is the CID the name pointed at before ("" for a new name).
	Old    string `json:"old,omitempty"`
	CID    string `json:"cid"`
	Size   int64  `json:"size,omitempty"`
	Client string `json:"client"` // the address the request came from
}

// appendAudit appends rec to the audit file of dir and makes it durable. Writes are
// rare, so the file is opened for each.
func appendAudit(dir string, rec auditRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, auditFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err = f.Write(append(line, '\n')); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}
