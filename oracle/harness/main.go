// nydus-converter runs the nydus snapshotter's converter (package pkg/converter) on files, so that the
// test suite can hold nydus-inspect against it. It is a test oracle: the product never runs it.
//
//	nydus-converter pack    --builder B [--compressor C] [--chunk-size N] [--fs-version V] SRC.tar OUT.blob
//	nydus-converter unpack  --builder B BLOB OUT.tar
//	nydus-converter entry   BLOB NAME OUT
//	nydus-converter merge   --builder B [--with-tar] OUT.boot BLOB...   (prints the blob digests, one a line)
//	nydus-converter convert --builder B [--oci] [--platform P] IN_LAYOUT OUT_LAYOUT
//
// Every error is one line on stderr and exit status 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images/converter"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	nydus "github.com/containerd/nydus-snapshotter/pkg/converter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	if len(os.Args) < 2 {
		die(errors.New("usage: nydus-converter pack|unpack|entry|merge|convert ..."))
	}
	var err error
	switch os.Args[1] {
	case "pack":
		err = cmdPack(os.Args[2:])
	case "unpack":
		err = cmdUnpack(os.Args[2:])
	case "entry":
		err = cmdEntry(os.Args[2:])
	case "merge":
		err = cmdMerge(os.Args[2:])
	case "convert":
		err = cmdConvert(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		die(err)
	}
}

func die(err error) {
	fmt.Fprintf(os.Stderr, "nydus-converter: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	os.Exit(1)
}

// workDir is a fresh temporary directory for the converter's own files.
func workDir() (string, error) {
	return os.MkdirTemp("", "nydus-converter-")
}

// writeAtomic writes through fn into a temporary file beside path and renames it into place.
func writeAtomic(path string, fn func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := fn(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func cmdPack(args []string) error {
	fs := flag.NewFlagSet("pack", flag.ContinueOnError)
	builder := fs.String("builder", "nydus-image", "nydus-image binary")
	compressor := fs.String("compressor", "", "blob compressor")
	chunkSize := fs.String("chunk-size", "", "chunk size (0x1000-0x1000000)")
	fsVersion := fs.String("fs-version", "6", "RAFS version")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("pack: want SRC.tar OUT.blob")
	}
	src, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer src.Close()
	work, err := workDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	return writeAtomic(fs.Arg(1), func(out io.Writer) error {
		w, err := nydus.Pack(context.Background(), out, nydus.PackOption{
			WorkDir:     work,
			BuilderPath: *builder,
			FsVersion:   *fsVersion,
			Compressor:  *compressor,
			ChunkSize:   *chunkSize,
		})
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		if _, err := io.Copy(w, src); err != nil {
			w.Close()
			return fmt.Errorf("pack: feeding the tar: %w", err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		return nil
	})
}

func openReaderAt(path string) (content.ReaderAt, error) {
	ra, err := local.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return ra, nil
}

func cmdUnpack(args []string) error {
	fs := flag.NewFlagSet("unpack", flag.ContinueOnError)
	builder := fs.String("builder", "nydus-image", "nydus-image binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("unpack: want BLOB OUT.tar")
	}
	ra, err := openReaderAt(fs.Arg(0))
	if err != nil {
		return err
	}
	defer ra.Close()
	work, err := workDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	return writeAtomic(fs.Arg(1), func(out io.Writer) error {
		if err := nydus.Unpack(context.Background(), ra, out, nydus.UnpackOption{WorkDir: work, BuilderPath: *builder}); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		return nil
	})
}

func cmdEntry(args []string) error {
	if len(args) != 3 {
		return errors.New("entry: want BLOB NAME OUT")
	}
	ra, err := openReaderAt(args[0])
	if err != nil {
		return err
	}
	defer ra.Close()
	return writeAtomic(args[2], func(out io.Writer) error {
		if _, err := nydus.UnpackEntry(ra, args[1], out); err != nil {
			return fmt.Errorf("entry %s: %w", args[1], err)
		}
		return nil
	})
}

func cmdMerge(args []string) error {
	fs := flag.NewFlagSet("merge", flag.ContinueOnError)
	builder := fs.String("builder", "nydus-image", "nydus-image binary")
	withTar := fs.Bool("with-tar", false, "write the bootstrap inside a tar")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return errors.New("merge: want OUT.boot BLOB...")
	}
	var layers []nydus.Layer
	for _, path := range fs.Args()[1:] {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		ra, err := openReaderAt(path)
		if err != nil {
			return err
		}
		defer ra.Close()
		layers = append(layers, nydus.Layer{Digest: digest.FromBytes(data), ReaderAt: ra})
	}
	work, err := workDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	var blobs []digest.Digest
	err = writeAtomic(fs.Arg(0), func(out io.Writer) error {
		var err error
		blobs, err = nydus.Merge(context.Background(), layers, out, nydus.MergeOption{
			WorkDir: work, BuilderPath: *builder, FsVersion: "6", WithTar: *withTar,
		})
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, d := range blobs {
		fmt.Println(d.Encoded())
	}
	return nil
}

// memLabels keeps the content store's labels in memory: the converter records its working facts
// (uncompressed digests, GC references) there, and none of them belongs in the output layout.
type memLabels struct {
	mu     sync.Mutex
	labels map[digest.Digest]map[string]string
}

func (m *memLabels) Get(d digest.Digest) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for k, v := range m.labels[d] {
		out[k] = v
	}
	return out, nil
}

func (m *memLabels) Set(d digest.Digest, labels map[string]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.labels[d] = labels
	return nil
}

func (m *memLabels) Update(d digest.Digest, update map[string]string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.labels[d]
	if cur == nil {
		cur = map[string]string{}
	}
	for k, v := range update {
		if v == "" {
			delete(cur, k)
		} else {
			cur[k] = v
		}
	}
	m.labels[d] = cur
	out := map[string]string{}
	for k, v := range cur {
		out[k] = v
	}
	return out, nil
}

// cmdConvert converts an OCI image layout in place of a copy: OUT_LAYOUT must hold a copy of
// IN_LAYOUT's blobs (the content store writes new blobs beside them); its index.json is rewritten to
// name the converted image.
func cmdConvert(args []string) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	builder := fs.String("builder", "nydus-image", "nydus-image binary")
	oci := fs.Bool("oci", false, "convert Docker media types to OCI ones")
	platform := fs.String("platform", "", "only this platform (default: all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("convert: want IN_LAYOUT OUT_LAYOUT")
	}
	in, out := fs.Arg(0), fs.Arg(1)
	indexBytes, err := os.ReadFile(filepath.Join(in, "index.json"))
	if err != nil {
		return err
	}
	cs, err := local.NewLabeledStore(out, &memLabels{labels: map[digest.Digest]map[string]string{}})
	if err != nil {
		return err
	}
	ctx := context.Background()
	// The layout's index.json is not a blob; store it as one so that the converter can walk from it.
	indexDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(indexBytes), Size: int64(len(indexBytes))}
	if err := content.WriteBlob(ctx, cs, "index-"+indexDesc.Digest.Encoded(), strings.NewReader(string(indexBytes)), indexDesc); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("convert: storing index.json: %w", err)
	}
	var mc platforms.MatchComparer = platforms.All
	if *platform != "" {
		p, err := platforms.Parse(*platform)
		if err != nil {
			return err
		}
		mc = platforms.OnlyStrict(p)
	}
	work, err := workDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	packOpt := nydus.PackOption{WorkDir: work, BuilderPath: *builder, FsVersion: "6"}
	mergeOpt := nydus.MergeOption{WorkDir: work, BuilderPath: *builder, FsVersion: "6", WithTar: true, OCI: *oci}
	convert := converter.IndexConvertFuncWithHook(nydus.LayerConvertFunc(packOpt), *oci, mc,
		converter.ConvertHooks{PostConvertHook: nydus.ConvertHookFunc(mergeOpt)})
	newDesc, err := convert(ctx, cs, indexDesc)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if newDesc == nil {
		newDesc = &indexDesc
	}
	// An index converted to one manifest collapses into it; the layout's index.json names the result.
	var result ocispec.Index
	if newDesc.MediaType == ocispec.MediaTypeImageIndex && newDesc.Digest == indexDesc.Digest {
		if err := json.Unmarshal(indexBytes, &result); err != nil {
			return err
		}
	} else {
		result = ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{*newDesc}}
		result.SchemaVersion = 2
	}
	data, err := json.MarshalIndent(result, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(out, "index.json"), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
