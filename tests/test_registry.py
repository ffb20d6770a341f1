"""Image references against a real registry (Debian's docker-registry on 127.0.0.1), anonymous and with
htpasswd basic auth, a bearer token server of ours, and a fault proxy of ours; images pushed with our
`convert` and with skopeo, in both directions; the archive forms (oci-archive:, docker-archive:, oci:DIR:REF)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from fixtures_util import run_cli
from registry_util import Proxy, TokenServer, pull, push, run_registry
from test_check import UPPER, image, lower, tar

PASSWORD = "s3cret-pa55word"


@pytest.fixture
def src(tmp_path) -> Path:
    return image(tmp_path / "src", [lower(), UPPER])


def cli(tmp_path: Path, *args):
    """The command with a cache of the test's own; (rc, stdout, stderr) as text."""
    proc = run_cli(*args, "--cache-dir", tmp_path / "cache")
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def fetched(err: str) -> int:
    line = next(line for line in err.splitlines() if line.startswith("registry: fetched"))
    return int(line.split()[2])


def one_line_error(rc: int, err: str) -> None:
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("nydus-inspect: error:") and "Traceback" not in err, err


# ---------------------------------------------------------------------------- anonymous registry
def test_skopeo_push_our_convert_pull_back_and_check(registry, src, tmp_path):
    """skopeo pushes the source; our convert reads it from the registry and pushes the nydus image; skopeo
    pulls that back and our check (on the pulled copy and on the registry references) finds them equal."""
    push(src, f"{registry}/app:v1")
    rc, said, err = cli(
        tmp_path, "convert", f"docker://{registry}/app:v1", f"docker://{registry}/app:v1-nydus", "--stats"
    )
    assert rc == 0, err
    assert fetched(err) > 0
    back = tmp_path / "back"
    pull(f"{registry}/app:v1-nydus", back)
    rc, said, err = cli(tmp_path, "check", back, "--source", src)
    assert rc == 0, said + err
    rc, said, err = cli(
        tmp_path, "check", f"docker://{registry}/app:v1-nydus", "--source", f"docker://{registry}/app:v1"
    )
    assert rc == 0, said + err
    # What skopeo pulled is what our layout conversion writes, byte for byte.
    local = tmp_path / "local"
    assert run_cli("convert", src, local).returncode == 0
    assert (
        json.loads((back / "index.json").read_text())["manifests"][0]["digest"]
        == json.loads((local / "index.json").read_text())["manifests"][0]["digest"]
    )


def test_skopeo_pushes_our_image_and_we_read_it(registry, src, tmp_path):
    ours = tmp_path / "ours"
    assert run_cli("convert", src, ours).returncode == 0
    push(ours, f"{registry}/nydus:1")
    ref = f"docker://{registry}/nydus:1"
    rc, said, err = cli(tmp_path, "cat", ref, "/etc/os-release")
    assert rc == 0 and said == 'NAME="test"\n' * 300, err
    rc, said, _ = cli(tmp_path, "ls", "-R", ref)
    assert rc == 0 and "/var/new" in said and "/var/gone" not in said
    rc, said, err = cli(tmp_path, "verify", ref)
    assert rc == 0, said + err
    out = tmp_path / "out.tar"
    rc, _, err = cli(tmp_path, "unpack", ref, "-o", out)
    assert rc == 0 and out.stat().st_size > 0, err
    rc, said, err = cli(tmp_path, "diff", ref, ref)
    assert rc == 0, said + err


def test_info_fetches_the_bootstrap_only(registry, src, tmp_path):
    ours = tmp_path / "ours"
    assert run_cli("convert", src, ours).returncode == 0
    push(ours, f"{registry}/nydus:1")
    index = json.loads((ours / "index.json").read_text())
    manifest = json.loads(
        (ours / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes()
    )
    *data, boot = manifest["layers"]
    rc, said, err = cli(tmp_path, "info", f"docker://{registry}/nydus:1", "--json", "--stats")
    assert rc == 0, err
    assert json.loads(said)["kind"]
    cache = tmp_path / "cache" / "blobs" / "sha256"
    assert (cache / boot["digest"].split(":")[1]).is_file()
    assert not any((cache / d["digest"].split(":")[1]).exists() for d in data)
    assert fetched(err) < boot["size"] + 4096 + sum(d["size"] for d in data)
    # cat then fetches the data blobs; a second cat fetches nothing but the manifest.
    assert cli(tmp_path, "cat", f"docker://{registry}/nydus:1", "/var/new")[:2] == (0, "new\n")
    rc, _, err = cli(tmp_path, "cat", f"docker://{registry}/nydus:1", "/var/new", "--stats")
    assert rc == 0 and fetched(err) < 4096, err


def test_multi_arch_index_and_platform(registry, tmp_path):
    from test_convert import LayoutWriter

    w = LayoutWriter(tmp_path / "multi")
    descs = []
    for arch in ("amd64", "arm64"):
        descs.append(
            w.image(
                [tar([{"name": "arch", "data": arch.encode()}])], ["gzip"], arch=arch, platform_in_desc=True
            )
        )
    w.index(descs)
    rc, said, err = cli(
        tmp_path, "convert", f"oci:{tmp_path / 'multi'}", f"docker://{registry}/multi:1", "--platform", "all"
    )
    assert rc == 0, err
    for arch in ("amd64", "arm64"):
        rc, said, err = cli(
            tmp_path, "cat", f"docker://{registry}/multi:1", "/arch", "--platform", f"linux/{arch}"
        )
        assert (rc, said) == (0, arch), err
    rc, _, err = cli(tmp_path, "cat", f"docker://{registry}/multi:1", "/arch", "--platform", "linux/s390x")
    one_line_error(rc, err)
    assert "linux/s390x" in err


def test_unreachable_and_bad_references_exit_2(registry, tmp_path):
    for ref, words in [
        ("docker://127.0.0.1:1/x:1", "cannot connect"),
        (f"docker://{registry}/absent:1", "404"),
        (f"docker://{registry}/Bad:1", "not a valid name"),
        ("docker://justahost", "expected docker://HOST"),
        (f"oci-archive:{tmp_path}/none.tar", "none.tar"),
    ]:
        rc, _, err = cli(tmp_path, "ls", ref)
        one_line_error(rc, err)
        assert words in err, (ref, err)


def test_plain_http_only_for_localhost():
    # No request is made here: only the scheme each registry would be reached with.
    from nydus_inspect.registry import Registry

    assert Registry("registry.example.com").base == "https://registry.example.com"
    assert Registry("registry.example.com:5000", insecure=True).base == "http://registry.example.com:5000"
    assert Registry("localhost:5000").base == "http://localhost:5000"
    assert Registry("127.0.0.1:5000").base == "http://127.0.0.1:5000"


def test_credentials_are_never_shown():
    from nydus_inspect.registry import Credentials

    creds = Credentials.parse(f"alice:{PASSWORD}")
    assert PASSWORD not in repr(creds) and PASSWORD not in str(creds)


# ---------------------------------------------------------------------------- basic auth
def test_basic_auth(src, tmp_path, monkeypatch):
    with run_registry(tmp_path / "reg", htpasswd=("alice", PASSWORD)) as host:
        push(src, f"{host}/app:1", creds=f"alice:{PASSWORD}")
        ref = f"docker://{host}/app:1"
        rc, _, err = cli(tmp_path, "ls", ref)
        one_line_error(rc, err)
        assert "access denied" in err and PASSWORD not in err
        rc, _, err = cli(tmp_path, "ls", ref, "--creds", "alice:wrong")
        one_line_error(rc, err)
        assert "wrong" not in err
        rc, said, err = cli(
            tmp_path, "convert", ref, f"docker://{host}/app:1-nydus", "--creds", f"alice:{PASSWORD}", "--json"
        )
        assert rc == 0, err
        assert PASSWORD not in said + err
        # From ~/.docker/config.json, as docker login writes it.
        config = tmp_path / "docker"
        config.mkdir()
        auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        rc, said, err = cli(tmp_path, "cat", f"docker://{host}/app:1-nydus", "/var/new")
        assert (rc, said) == (0, "new\n"), err
        back = tmp_path / "back"
        pull(f"{host}/app:1-nydus", back, creds=f"alice:{PASSWORD}")
        assert cli(tmp_path, "check", back, "--source", src)[0] == 0


# ---------------------------------------------------------------------------- bearer tokens
def test_bearer_token_flow(registry, src, tmp_path):
    push(src, f"{registry}/app:1")
    tokens = TokenServer("bob", PASSWORD, "tok-123")
    proxy = Proxy(registry, token="tok-123", realm=tokens.realm)
    try:
        ref = f"docker://{proxy.address}/app:1"
        rc, _, err = cli(tmp_path, "convert", ref, f"oci:{tmp_path / 'out'}")
        one_line_error(rc, err)
        rc, _, err = cli(tmp_path, "convert", ref, f"oci:{tmp_path / 'out'}", "--creds", f"bob:{PASSWORD}")
        assert rc == 0, err
        assert any("scope=repository%3Aapp%3Apull" in p for p in tokens.requests), tokens.requests
        assert ("GET", "/v2/app/manifests/1", "Bearer tok-123") in proxy.seen
        assert cli(tmp_path, "check", tmp_path / "out", "--source", src)[0] == 0
    finally:
        proxy.close()
        tokens.close()


def test_credentials_do_not_follow_a_redirect_to_another_host(registry, src, tmp_path):
    ours = tmp_path / "ours"
    assert run_cli("convert", src, ours).returncode == 0
    push(ours, f"{registry}/nydus:1")
    tokens = TokenServer("bob", PASSWORD, "tok-456")
    front = Proxy(registry, token="tok-456", realm=tokens.realm)
    storage = Proxy(registry)
    front.redirect_to = storage.address
    try:
        rc, said, err = cli(
            tmp_path, "cat", f"docker://{front.address}/nydus:1", "/var/new", "--creds", f"bob:{PASSWORD}"
        )
        assert (rc, said) == (0, "new\n"), err
        assert storage.seen and all(auth is None for _, _, auth in storage.seen), storage.seen
        assert any(auth == "Bearer tok-456" for _, _, auth in front.seen)
    finally:
        front.close()
        storage.close()
        tokens.close()


# ---------------------------------------------------------------------------- faults
@pytest.fixture
def nydus_ref(registry, src, tmp_path):
    ours = tmp_path / "ours"
    assert run_cli("convert", src, ours).returncode == 0
    push(ours, f"{registry}/nydus:1")
    proxy = Proxy(registry)
    yield proxy
    proxy.close()


def test_faults_are_retried(nydus_ref, tmp_path):
    proxy = nydus_ref
    proxy.faults = ["drop", "500", "delay", "drop-body", "500"]
    rc, said, err = cli(tmp_path, "cat", f"docker://{proxy.address}/nydus:1", "/etc/os-release", "--stats")
    assert rc == 0 and said == 'NAME="test"\n' * 300, err
    retries = int(err.split("(")[-1].split()[0])
    assert retries >= 4, err
    assert not proxy.faults


def test_a_registry_ignoring_range_still_serves(nydus_ref, tmp_path):
    nydus_ref.ignore_range = True
    rc, said, err = cli(tmp_path, "cat", f"docker://{nydus_ref.address}/nydus:1", "/var/new")
    assert (rc, said) == (0, "new\n"), err


def test_persistent_failures_exit_2(nydus_ref, tmp_path):
    nydus_ref.faults = ["500"] * 20
    rc, _, err = cli(tmp_path, "ls", f"docker://{nydus_ref.address}/nydus:1")
    one_line_error(rc, err)
    assert "500" in err


def test_a_blob_not_matching_its_digest_is_refused(nydus_ref, tmp_path):
    nydus_ref.fault_path = "/blobs/sha256:"
    nydus_ref.faults = ["corrupt"] * 20
    rc, _, err = cli(tmp_path, "info", f"docker://{nydus_ref.address}/nydus:1")
    one_line_error(rc, err)
    assert "do not match the digest" in err
    assert not list((tmp_path / "cache" / "blobs" / "sha256").glob("*.part"))


# ---------------------------------------------------------------------------- archives
def test_oci_archive_both_ways(src, tmp_path):
    archive = tmp_path / "nydus.tar"
    rc, said, err = cli(tmp_path, "convert", f"oci:{src}", f"oci-archive:{archive}:v2")
    assert rc == 0, err
    with tarfile.open(archive) as tf:
        assert "oci-layout" in tf.getnames() and "index.json" in tf.getnames()
    assert cli(tmp_path, "check", f"oci-archive:{archive}:v2", "--source", f"oci:{src}:latest")[0] == 0
    rc, _, err = cli(tmp_path, "ls", f"oci-archive:{archive}:nope")
    one_line_error(rc, err)
    assert "v2" in err


def test_docker_archive_source(src, tmp_path):
    """A `docker save` tarball: manifest.json, the config and uncompressed layer tars."""
    layers = [tar(lower()), tar(UPPER)]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers],
            },
        }
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        names = [f"{i}/layer.tar" for i in range(len(layers))]
        files = {"config.json": config, **dict(zip(names, layers))}
        files["manifest.json"] = json.dumps(
            [{"Config": "config.json", "RepoTags": ["app:1"], "Layers": names}]
        ).encode()
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    archive = tmp_path / "saved.tar"
    archive.write_bytes(buf.getvalue())
    out = tmp_path / "out"
    rc, _, err = cli(tmp_path, "convert", f"docker-archive:{archive}", out)
    assert rc == 0, err
    rc, said, err = cli(tmp_path, "check", out, "--source", f"docker-archive:{archive}")
    assert rc == 0, said + err
    rc, said, err = cli(tmp_path, "check", out, "--source", f"oci:{src}")
    assert rc == 0, said + err


def pushed(err: str) -> int:
    line = next(line for line in err.splitlines() if line.startswith("registry: fetched"))
    return int(line.split()[5])


def test_push_checks_existence_and_mounts_across_repositories(registry, src, tmp_path):
    push(src, f"{registry}/app:1")
    first = cli(
        tmp_path, "convert", f"docker://{registry}/app:1", f"docker://{registry}/app:1-nydus", "--stats"
    )
    assert first[0] == 0, first[2]
    again = cli(
        tmp_path, "convert", f"docker://{registry}/app:1", f"docker://{registry}/app:1-nydus", "--stats"
    )
    assert again[0] == 0, again[2]
    # The blobs are there already: only the manifest goes up the second time.
    assert pushed(again[2]) < 4096 < pushed(first[2])
    # An image already nydus is copied through; into another repository of the same registry its blobs are
    # mounted, not uploaded.
    rc, _, err = cli(
        tmp_path, "convert", f"docker://{registry}/app:1-nydus", f"docker://{registry}/other:1", "--stats"
    )
    assert rc == 0, err
    assert pushed(err) < 4096, err
    rc, said, err = cli(tmp_path, "check", f"docker://{registry}/other:1", "--source", f"oci:{src}")
    assert rc == 0, said + err
