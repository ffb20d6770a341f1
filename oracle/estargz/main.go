// estargz-build writes an eStargz layer from a tar with the stargz snapshotter's own builder (module
// github.com/containerd/stargz-snapshotter/estargz), so that the test suite can hold nydus-inspect's eStargz
// reader and estargz-ref packer against layers made by the real writer. It is a test oracle: the product never
// runs it.
//
//	estargz-build [--chunk-size N] [--min-chunk-size N] [--toc TOC.json] IN.tar OUT.tar.gz
//
// It prints one JSON line: the TOC digest (the containerd.io/snapshot/stargz/toc.digest annotation), the
// uncompressed diff id, the blob's sha256 and size. --toc also writes the TOC JSON (stargz.index.json) as
// stored in the blob, byte for byte, which is what `nydus-image create --type estargz-ref` reads.
// OUT is written to a temporary file and renamed. Every error is one line on stderr and exit status 1.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func main() {
	flags := flag.NewFlagSet("estargz-build", flag.ContinueOnError)
	chunkSize := flags.Int("chunk-size", 0, "chunk size (0: the module's default)")
	minChunkSize := flags.Int("min-chunk-size", 0, "pack small files into one gzip member up to this size (0: off)")
	tocOut := flags.String("toc", "", "also write the TOC JSON here")
	if err := flags.Parse(os.Args[1:]); err != nil {
		os.Exit(1)
	}
	if flags.NArg() != 2 {
		die(errors.New("usage: estargz-build [--chunk-size N] [--min-chunk-size N] [--toc TOC.json] IN.tar OUT.tar.gz"))
	}
	if err := build(flags.Arg(0), flags.Arg(1), *chunkSize, *minChunkSize, *tocOut); err != nil {
		die(err)
	}
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "estargz-build:", err)
	os.Exit(1)
}

func build(in, out string, chunkSize, minChunkSize int, tocOut string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	var opts []estargz.Option
	if chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(chunkSize))
	}
	if minChunkSize > 0 {
		opts = append(opts, estargz.WithMinChunkSize(minChunkSize))
	}
	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), opts...)
	if err != nil {
		return fmt.Errorf("build %s: %w", in, err)
	}
	defer blob.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), ".estargz-build-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, h), blob)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	if tocOut != "" {
		if err := writeTOC(out, tocOut); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"tocDigest": blob.TOCDigest().String(),
		"diffID":    blob.DiffID().String(),
		"digest":    "sha256:" + hex.EncodeToString(h.Sum(nil)),
		"size":      size,
	})
}

// writeTOC copies the TOC JSON out of the blob as stored: the footer gives the TOC's gzip member, which
// holds a tar with the one entry stargz.index.json.
func writeTOC(blobPath, tocOut string) error {
	f, err := os.Open(blobPath)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	sr := io.NewSectionReader(f, 0, st.Size())
	tocOffset, footerSize, err := estargz.OpenFooter(sr)
	if err != nil {
		return fmt.Errorf("footer of %s: %w", blobPath, err)
	}
	zr, err := gzip.NewReader(io.NewSectionReader(f, tocOffset, st.Size()-footerSize-tocOffset))
	if err != nil {
		return fmt.Errorf("TOC of %s: %w", blobPath, err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return fmt.Errorf("TOC of %s: %w", blobPath, err)
	}
	if hdr.Name != estargz.TOCTarName {
		return fmt.Errorf("TOC of %s: first entry is %q, not %q", blobPath, hdr.Name, estargz.TOCTarName)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return fmt.Errorf("TOC of %s: %w", blobPath, err)
	}
	return os.WriteFile(tocOut, data, 0o644)
}
