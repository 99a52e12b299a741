#!/usr/bin/env python3
"""Writes a large registry straight into docker-registry's filesystem storage.

    gen_registry.py ROOT [--repos 1000] [--tags 100] [--big-tags 10000] [--prefix gen]

ROOT is the `storage.filesystem.rootdirectory` of a docker-registry
(distribution 2.x), stopped or not yet started. It gets REPOS repositories
PREFIX/r0000... of TAGS tags each (t000...), and one repository PREFIX/big
of BIG_TAGS tags (t00000...): made in seconds, where pushing them would take
one request round per tag.

Every tag is its own OCI artifact manifest (so each tag folder of a mount is
a manifest of its own), and they share their blobs: the empty config and two
small titled layers, a.txt and b.txt. The manifests differ by one
annotation, `dev.regfs.bench.ref`, which names the repository and tag.

The layout written is distribution's (registry/storage/paths.go):

    docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data         every blob and manifest
    docker/registry/v2/repositories/<repo>/_layers/sha256/<hex>/link            sha256:<hex>
    docker/registry/v2/repositories/<repo>/_manifests/revisions/sha256/<hex>/link
    docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/current/link
    docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link

The catalog lists the folders that have `_layers`, so each repository links
its config and layers there.
"""

import argparse
import hashlib
import json
import os
import sys
import time

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.regfs.bench.v1"
LAYERS = [("a.txt", b"layer a of every generated artifact\n"), ("b.txt", b"layer b\n" * 64)]


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Store:
    """Writes files, making each folder once (with the fewest system calls:
    this is most of the time taken)."""

    def __init__(self, root):
        root = os.path.abspath(root)
        os.makedirs(root, exist_ok=True)
        self.v2 = os.path.join(root, "docker", "registry", "v2")
        self.made = {root}
        self.files = 0

    def mkdirs(self, path):
        if path in self.made:
            return
        parent = os.path.dirname(path)
        if parent not in self.made and parent != path:
            self.mkdirs(parent)
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        self.made.add(path)

    def write(self, path, data):
        self.mkdirs(os.path.dirname(path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self.files += 1

    def blob(self, data):
        d = digest(data)
        h = d[len("sha256:"):]
        self.write(os.path.join(self.v2, "blobs", "sha256", h[:2], h, "data"), data)
        return d

    def link(self, repo, *parts, target):
        self.write(os.path.join(self.v2, "repositories", repo, *parts, "link"), target.encode())


def descriptor(media_type, data, title=None):
    d = {"mediaType": media_type, "digest": digest(data), "size": len(data)}
    if title:
        d["annotations"] = {"org.opencontainers.image.title": title}
    return d


def manifest(ref):
    m = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(EMPTY_TYPE, EMPTY),
        "layers": [descriptor("text/plain", data, title) for title, data in LAYERS],
        "annotations": {"dev.regfs.bench.ref": ref},
    }
    return json.dumps(m, separators=(",", ":"), sort_keys=True).encode()


def repository(store, repo, tags):
    shared = [EMPTY] + [data for _, data in LAYERS]
    for data in shared:
        store.link(repo, "_layers", "sha256", digest(data)[7:], target=digest(data))
    for tag in tags:
        body = manifest(f"{repo}:{tag}")
        d = store.blob(body)
        h = d[7:]
        store.link(repo, "_manifests", "revisions", "sha256", h, target=d)
        store.link(repo, "_manifests", "tags", tag, "current", target=d)
        store.link(repo, "_manifests", "tags", tag, "index", "sha256", h, target=d)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--repos", type=int, default=1000)
    p.add_argument("--tags", type=int, default=100)
    p.add_argument("--big-tags", type=int, default=10000)
    p.add_argument("--prefix", default="gen")
    a = p.parse_args()
    t0 = time.time()
    store = Store(a.root)
    for data in [EMPTY] + [data for _, data in LAYERS]:
        store.blob(data)
    width = max(4, len(str(a.repos - 1)))
    twidth = max(3, len(str(a.tags - 1)))
    for r in range(a.repos):
        repository(store, f"{a.prefix}/r{r:0{width}d}", [f"t{t:0{twidth}d}" for t in range(a.tags)])
    if a.big_tags > 0:
        bwidth = max(5, len(str(a.big_tags - 1)))
        repository(store, f"{a.prefix}/big", [f"t{t:0{bwidth}d}" for t in range(a.big_tags)])
    print(
        json.dumps(
            {
                "repositories": a.repos + (1 if a.big_tags > 0 else 0),
                "tags": a.repos * a.tags + a.big_tags,
                "files": store.files,
                "seconds": round(time.time() - t0, 3),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
