// Command ggcr-registry serves go-containerregistry's registry
// (pkg/registry) with the OCI referrers API switched on, so the
// integration tests have a registry that answers
// GET /v2/<name>/referrers/<digest> next to docker-registry 2.8, which
// does not (tests/support/ggcr.rs starts it).
//
//	ggcr-registry [-addr 127.0.0.1:0] [-blobs DIR] [-referrers=true] [-oci-subject=true] [-log FILE]
//
// One thing is added to go-containerregistry's registry: the OCI-Subject
// header. distribution-spec v1.1.1 says a registry that supports the
// referrers API MUST answer the put of a manifest with a subject with
// "OCI-Subject: <subject digest>", and a client that does not get it MUST
// keep the sha256-<hex> tag schema; pkg/registry v0.22.1 lists referrers
// but never sends the header, so ORAS (and regfs) would write tag-schema
// indexes to it. With -oci-subject (the default) the header is sent after
// a successful put of a manifest that has a subject, as a conforming
// registry does; -oci-subject=false serves pkg/registry as it is.
//
// It prints the address it listens on ("127.0.0.1:PORT") as its first line
// on stdout, then serves until it is killed or its stdin reaches end of
// file (so a test that dies does not leave it behind). Manifests are kept
// in memory; blobs too, unless -blobs names a folder.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	blobs := flag.String("blobs", "", "keep blobs in this folder instead of memory")
	referrers := flag.Bool("referrers", true, "serve the OCI referrers API")
	ociSubject := flag.Bool("oci-subject", true, "send OCI-Subject when a manifest with a subject is put")
	logFile := flag.String("log", "", "log each request to this file (default: no request log)")
	flag.Parse()

	logger := log.New(io.Discard, "", 0)
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ggcr-registry: cannot open the log: %v\n", err)
			os.Exit(2)
		}
		logger = log.New(f, "", log.LstdFlags|log.Lmicroseconds)
	}
	opts := []registry.Option{registry.Logger(logger), registry.WithReferrersSupport(*referrers)}
	if *blobs != "" {
		if err := os.MkdirAll(*blobs, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "ggcr-registry: cannot create %s: %v\n", *blobs, err)
			os.Exit(2)
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(*blobs)))
	}

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ggcr-registry: cannot listen on %s: %v\n", *addr, err)
		os.Exit(2)
	}
	fmt.Println(l.Addr().String())

	go func() {
		// The parent holds our stdin open; when it goes, so do we.
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		os.Exit(0)
	}()

	var handler http.Handler = registry.New(opts...)
	if *ociSubject {
		handler = subjectHeader{next: handler}
	}
	if err := http.Serve(l, handler); err != nil {
		fmt.Fprintf(os.Stderr, "ggcr-registry: %v\n", err)
		os.Exit(1)
	}
}

// subjectHeader adds OCI-Subject to the answer to a successful manifest
// put whose manifest has a subject (see the package comment).
type subjectHeader struct{ next http.Handler }

func (h subjectHeader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var m struct {
			Subject *struct {
				Digest string `json:"digest"`
			} `json:"subject"`
		}
		if json.Unmarshal(body, &m) == nil && m.Subject != nil && m.Subject.Digest != "" {
			w = &withSubject{ResponseWriter: w, digest: m.Subject.Digest}
		}
	}
	h.next.ServeHTTP(w, r)
}

type withSubject struct {
	http.ResponseWriter
	digest string
}

func (w *withSubject) WriteHeader(code int) {
	if code == http.StatusCreated {
		w.Header().Set("OCI-Subject", w.digest)
	}
	w.ResponseWriter.WriteHeader(code)
}
