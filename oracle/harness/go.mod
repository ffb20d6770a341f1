module github.com/nydus-inspect/oracle-harness

go 1.24

require github.com/containerd/nydus-snapshotter v0.15.15
