package store_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zosfs/zosfs-agent/store"
	"github.com/zosfs/zosfs-agent/store/storetest"
)

// The s3 store is tested against versitygw (posix backend in a temporary directory).

func TestS3Conformance(t *testing.T) {
	addr := storetest.StartVersity(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		u := storetest.NewBucket(t, addr)
		s, err := store.Open(t.Context(), u)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s.String(), storetest.S3Secret) {
			t.Errorf("String() shows the secret: %s", s)
		}
		return s
	})
}

func TestS3ObjectName(t *testing.T) {
	addr := storetest.StartVersity(t)
	u := storetest.NewBucket(t, addr)
	s, err := store.Open(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, data := storetest.ID(32, -1), []byte("named by hex id")
	if err := s.Put(t.Context(), id, data); err != nil {
		t.Fatal(err)
	}
	// Read it back with a plain S3 client under the name hex(id).
	cfg, _ := store.ParseS3URL(u)
	client := s3.New(s3.Options{
		Region: store.S3DefaultRegion, BaseEndpoint: aws.String("http://" + addr), UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: storetest.S3Access, SecretAccessKey: storetest.S3Secret}, nil
		}),
	})
	out, err := client.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &cfg.Bucket, Key: aws.String(id.String())})
	if err != nil {
		t.Fatalf("object hex(id) not found: %v", err)
	}
	defer out.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(out.Body)
	if !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("object content = %q, want %q", buf.Bytes(), data)
	}
}

func TestS3Errors(t *testing.T) {
	addr := storetest.StartVersity(t)
	u := storetest.NewBucket(t, addr)

	// Wrong secret: an error, not "not found", and never showing the secret.
	bad := strings.Replace(u, ":"+storetest.S3Secret+"@", ":not-the-secret@", 1)
	s, err := store.Open(t.Context(), bad)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, op := range []string{"get", "has", "put"} {
		var err error
		switch op {
		case "get":
			_, err = s.Get(t.Context(), storetest.ID(32, -1))
		case "has":
			_, err = s.Has(t.Context(), storetest.ID(32, -1))
		case "put":
			err = s.Put(t.Context(), storetest.ID(32, -1), []byte("x"))
		}
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s with a wrong secret: err = %v, want a failure", op, err)
			continue
		}
		if strings.Contains(err.Error(), "not-the-secret") || !strings.Contains(err.Error(), s.String()) {
			t.Errorf("%s: error should name the store without the secret: %v", op, err)
		}
	}
}
