package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/zosfs/zosfs-agent/flist"
)

// S3DefaultRegion is the region of an s3:// URL that names none.
const S3DefaultRegion = "us-east-1"

// S3Config says how to reach an S3 bucket.
type S3Config struct {
	Endpoint  string // host:port
	TLS       bool   // https (s3s://) instead of http (s3://)
	Bucket    string
	AccessKey string // empty for anonymous access
	SecretKey string
	Region    string // default S3DefaultRegion
	// HTTPClient, if set, replaces the SDK's default client (e.g. to trust a private CA).
	HTTPClient *http.Client
}

// ParseS3URL parses s3://key:secret@host:port/bucket (s3s:// for TLS), with an optional
// ?region=R query. Errors wrap ErrUnsupported.
func ParseS3URL(rawURL string) (S3Config, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return S3Config{}, err
	}
	bad := func(why string) (S3Config, error) {
		return S3Config{}, fmt.Errorf("%w: %s: %s", ErrUnsupported, StripPassword(rawURL), why)
	}
	if u.Scheme != "s3" && u.Scheme != "s3s" {
		return bad("not an s3:// URL")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return bad("no host")
	}
	bucket := strings.Trim(u.Path, "/")
	if bucket == "" || strings.Contains(bucket, "/") {
		return bad("want exactly one path element, the bucket")
	}
	cfg := S3Config{Endpoint: u.Host, TLS: u.Scheme == "s3s", Bucket: bucket, Region: S3DefaultRegion}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("malformed query")
	}
	for k, v := range q {
		if k != "region" || len(v) != 1 || v[0] == "" {
			return bad("unknown query parameter " + k)
		}
		cfg.Region = v[0]
	}
	if u.User != nil {
		cfg.AccessKey = u.User.Username()
		cfg.SecretKey, _ = u.User.Password()
	}
	return cfg, nil
}

// S3 is a store in an S3 bucket, addressed path-style: block X is the object named hex(X).
type S3 struct {
	cfg    S3Config
	name   string
	client *s3.Client
}

var _ Store = (*S3)(nil)

// NewS3 returns the store for the bucket cfg names. It does not connect yet.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, fmt.Errorf("%w: s3 store needs an endpoint and a bucket", ErrUnsupported)
	}
	if _, _, err := net.SplitHostPort(cfg.Endpoint); err != nil && !strings.Contains(err.Error(), "missing port") {
		return nil, fmt.Errorf("%w: s3 endpoint %q: %v", ErrUnsupported, cfg.Endpoint, err)
	}
	if cfg.Region == "" {
		cfg.Region = S3DefaultRegion
	}
	scheme, httpScheme := "s3", "http"
	if cfg.TLS {
		scheme, httpScheme = "s3s", "https"
	}
	u := url.URL{Scheme: scheme, Host: cfg.Endpoint, Path: "/" + cfg.Bucket}
	if cfg.AccessKey != "" {
		u.User = url.User(cfg.AccessKey)
	}
	if cfg.Region != S3DefaultRegion {
		u.RawQuery = url.Values{"region": {cfg.Region}}.Encode()
	}
	opts := s3.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(httpScheme + "://" + cfg.Endpoint),
		UsePathStyle: true,
		// Only what S3 requires: many S3-compatible servers know no newer checksums.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds := aws.Credentials{AccessKeyID: cfg.AccessKey, SecretAccessKey: cfg.SecretKey, Source: "zosfs store URL"}
		opts.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil })
	} else {
		opts.Credentials = aws.AnonymousCredentials{}
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	}
	return &S3{cfg: cfg, name: u.String(), client: s3.New(opts)}, nil
}

// String returns s3://[key@]host:port/bucket, without the secret.
func (s *S3) String() string { return s.name }

// Close does nothing.
func (s *S3) Close() error { return nil }

// Get reads the object hex(id).
func (s *S3) Get(ctx context.Context, id flist.BlockID) ([]byte, error) {
	if err := begin(ctx, s, "get", id); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(id.String())})
	if err != nil {
		return nil, s.wrap(ctx, "get", id, err)
	}
	defer out.Body.Close()
	if out.ContentLength != nil && *out.ContentLength > MaxBlockSize {
		return nil, fmt.Errorf("%s: get %x: %w", s, id, tooLarge(*out.ContentLength))
	}
	data, err := io.ReadAll(io.LimitReader(out.Body, MaxBlockSize+1))
	if err != nil {
		return nil, s.wrap(ctx, "get", id, err)
	}
	if len(data) > MaxBlockSize {
		return nil, fmt.Errorf("%s: get %x: %w", s, id, tooLarge(-1))
	}
	return data, nil
}

// Has asks with HEAD.
func (s *S3) Has(ctx context.Context, id flist.BlockID) (bool, error) {
	if err := begin(ctx, s, "has", id); err != nil {
		return false, err
	}
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(id.String())})
	if err != nil {
		err = s.wrap(ctx, "has", id, err)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Put writes the object hex(id).
func (s *S3) Put(ctx context.Context, id flist.BlockID, data []byte) error {
	if err := begin(ctx, s, "put", id); err != nil {
		return err
	}
	if err := checkPut(s, id, data); err != nil {
		return err
	}
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &s.cfg.Bucket,
		Key:           aws.String(id.String()),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return s.wrap(ctx, "put", id, err)
	}
	return nil
}

// wrap names the store in err, maps a missing object to ErrNotFound and a cancelled
// context to its error.
func (s *S3) wrap(ctx context.Context, op string, id flist.BlockID, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%s: %s %x: %w", s, op, id, ErrNotFound)
		}
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return fmt.Errorf("%s: %s %x: %w", s, op, id, err)
}
