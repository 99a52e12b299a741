#!/usr/bin/env python3
"""Helpers for scripts/bench.sh (issue 5): data set creation through public
clients (the ORAS Python client, the registry HTTP API), hashing, process
lookup and registry access-log accounting.

Usage: bench_helpers.py COMMAND ARGS...   (see the functions below)
"""

import hashlib
import json
import os
import re
import socket
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

CHUNK = 4 << 20


def die(msg):
    print(f"bench_helpers: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------- commands

def cmd_freeport():
    """Print a free TCP port on 127.0.0.1."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_sha256(path):
    """Print the sha256 hex of a file (hashlib: SHA-NI, ~1.4 GB/s)."""
    print(sha256_file(path))


def cmd_randfile(path, size_bytes):
    """Write SIZE random bytes to PATH (os.urandom, 8 MiB at a time)."""
    n = int(size_bytes)
    with open(path, "wb") as f:
        while n > 0:
            k = min(n, 8 << 20)
            f.write(os.urandom(k))
            n -= k


def cmd_oras_push(host, target, *files):
    """Push FILES (bare names, relative to the cwd) as one ORAS artifact,
    so each layer's title is the bare name. Prints the manifest digest."""
    import oras.client

    client = oras.client.OrasClient(hostname=host, insecure=True)
    resp = client.push(target=f"{host}/{target}", files=list(files), quiet=True)
    if resp.status_code not in (200, 201):
        die(f"push {target}: HTTP {resp.status_code} {resp.text[:200]}")
    print(resp.headers.get("Docker-Content-Digest", ""))


def _session():
    import requests

    s = requests.Session()
    a = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4)
    s.mount("http://", a)
    return s


def _upload_blob(s, base, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.head(f"{base}/v2/{repo}/blobs/{digest}")
    if r.status_code == 200:
        return digest
    r = s.post(f"{base}/v2/{repo}/blobs/uploads/")
    if r.status_code != 202:
        die(f"POST uploads {repo}: HTTP {r.status_code}")
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = base + loc
    sep = "&" if "?" in loc else "?"
    r = s.put(
        f"{loc}{sep}digest={urllib.parse.quote(digest)}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    if r.status_code != 201:
        die(f"PUT blob {repo}: HTTP {r.status_code} {r.text[:200]}")
    return digest


def cmd_populate_many(host, prefix, repos, tags):
    """REPOS repositories PREFIX/rNNN with TAGS tags each (t00..), one tiny
    titled blob and the empty config per repository, one distinct manifest
    per tag, through the distribution API."""
    repos, tags = int(repos), int(tags)
    base = f"http://{host}"
    empty = b"{}"

    def one(i):
        s = _session()
        repo = f"{prefix}/r{i:03d}"
        data = f"tiny blob of {repo}\n".encode()
        ldig = _upload_blob(s, base, repo, data)
        cdig = _upload_blob(s, base, repo, empty)
        for t in range(tags):
            tag = f"t{t:02d}"
            m = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.example.bench.v1",
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": cdig,
                    "size": len(empty),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": ldig,
                        "size": len(data),
                        "annotations": {"org.opencontainers.image.title": f"file-{tag}.txt"},
                    }
                ],
                "annotations": {"bench.tag": f"{repo}:{tag}"},
            }
            body = json.dumps(m, separators=(",", ":")).encode()
            r = s.put(
                f"{base}/v2/{repo}/manifests/{tag}",
                data=body,
                headers={"Content-Type": m["mediaType"]},
            )
            if r.status_code != 201:
                die(f"PUT manifest {repo}:{tag}: HTTP {r.status_code} {r.text[:200]}")
        return repo

    with ThreadPoolExecutor(max_workers=4) as ex:
        done = list(ex.map(one, range(repos)))
    print(len(done))


def cmd_populate_sync(host, repo, tags, big_mb, srcdir):
    """TAGS tags of REPO, each an ORAS artifact of three titled files of
    distinct random content (8 KiB, ~1 MiB, BIG_MB MiB), written under
    SRCDIR/<tag>/ first (kept: the reference copy)."""
    import oras.client

    client = oras.client.OrasClient(hostname=host, insecure=True)
    tags, big = int(tags), int(float(big_mb) * (1 << 20))
    cwd = os.getcwd()
    for t in range(tags):
        tag = f"v{t:02d}"
        d = os.path.join(srcdir, tag)
        os.makedirs(d, exist_ok=True)
        sizes = {"notes.txt": 8 << 10, "medium.bin": (1 << 20) + t * (64 << 10), "large.bin": big}
        for name, n in sizes.items():
            cmd_randfile(os.path.join(d, name), n)
        os.chdir(d)
        try:
            resp = client.push(target=f"{host}/{repo}:{tag}", files=list(sizes), quiet=True)
        finally:
            os.chdir(cwd)
        if resp.status_code not in (200, 201):
            die(f"push {repo}:{tag}: HTTP {resp.status_code}")
    print(tags)


def _get_json(s, url, accept=None):
    r = s.get(url, headers={"Accept": accept} if accept else {})
    if r.status_code == 404:
        return None, None
    if r.status_code != 200:
        die(f"GET {url}: HTTP {r.status_code} {r.text[:200]}")
    return r.json(), r.headers


SCHEMA_TAG = re.compile(r"^sha256-[0-9a-f]{64}$")
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def cmd_mirror_digests(host, repo):
    """What a mirror of REPO must carry, one line each, sorted: `tag TAG
    DIGEST` for every tag but the `sha256-<hex>` tag-schema ones, and
    `referrer SUBJECT DIGEST` for every referrer reachable from the tags
    (the referrers API where the registry has it, else the tag schema;
    referrers of referrers too). Tag-schema indexes themselves are listed
    as `schema-index TAG DIGEST` (their bytes depend on who wrote them)."""
    s = _session()
    base = f"http://{host}/v2/{repo}"
    tags_json, _ = _get_json(s, f"{base}/tags/list")
    tags = (tags_json or {}).get("tags") or []
    out = []
    todo = []
    for t in tags:
        r = s.head(f"{base}/manifests/{t}", headers={"Accept": MANIFEST_ACCEPT})
        if r.status_code != 200:
            die(f"HEAD {repo}:{t}: HTTP {r.status_code}")
        d = r.headers["Docker-Content-Digest"]
        if SCHEMA_TAG.match(t):
            out.append(f"schema-index {t} {d}")
        else:
            out.append(f"tag {t} {d}")
            todo.append(d)
    seen = set()
    while todo:
        subject = todo.pop()
        if subject in seen:
            continue
        seen.add(subject)
        idx, headers = _get_json(s, f"{base}/referrers/{subject}", "application/vnd.oci.image.index.v1+json")
        if idx is None or "image.index" not in (headers or {}).get("Content-Type", ""):
            idx, _ = _get_json(s, f"{base}/manifests/sha256-{subject.split(':', 1)[1]}", MANIFEST_ACCEPT)
        for m in (idx or {}).get("manifests") or []:
            out.append(f"referrer {subject} {m['digest']}")
            todo.append(m["digest"])
    print("\n".join(sorted(out)))


def cmd_daemon_pid(mountpoint):
    """Print the PID of the regfs process serving MOUNTPOINT (argv holds
    `mount` and the mountpoint; the parent `regfs mount` has exited)."""
    mp = os.path.realpath(mountpoint)
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not argv or not os.path.basename(argv[0]).startswith("regfs"):
            continue
        if "mount" in argv and any(os.path.realpath(a) == mp for a in argv[1:] if a.startswith("/")):
            found.append(int(p))
    if not found:
        sys.exit(1)
    print(max(found))


def _log_lines(log, start):
    with open(log, "rb") as f:
        lines = f.read().decode(errors="replace").splitlines()
    return lines[int(start):]


ACCESS = re.compile(r'"(?P<m>[A-Z]+) (?P<u>\S+) HTTP/[\d.]+" (?P<s>\d{3}) (?P<b>\d+|-)')


def cmd_access(log, start, storage):
    """Summarise access-log lines after line START: requests, bytes served,
    write requests (POST/PATCH/PUT/DELETE), and blob bytes uploaded (sizes,
    from STORAGE, of the digests whose uploads completed). Prints JSON."""
    reqs = served = writes = up_bytes = 0
    by_method = {}
    for line in _log_lines(log, start):
        m = ACCESS.search(line)
        if not m:
            continue
        reqs += 1
        meth = m["m"]
        u = m["u"].split("?")[0]
        kind = next((k for k in ("_catalog", "tags/list", "referrers", "manifests", "blobs/uploads", "blobs") if f"/{k}" in u), "other")
        key = f"{meth} {kind}"
        by_method[key] = by_method.get(key, 0) + 1
        if m["b"] != "-" and meth == "GET":
            served += int(m["b"])
        if meth in ("POST", "PATCH", "PUT", "DELETE"):
            writes += 1
        if meth == "PUT" and "/blobs/uploads/" in m["u"]:
            q = urllib.parse.parse_qs(urllib.parse.urlparse(m["u"]).query)
            for dg in q.get("digest", []):
                hexd = dg.split(":", 1)[-1]
                p = os.path.join(storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
                try:
                    up_bytes += os.path.getsize(p)
                except OSError:
                    pass
    print(json.dumps({"requests": reqs, "served": served, "writes": writes,
                      "uploaded": up_bytes, "methods": by_method}))


def cmd_jget(json_text, key):
    v = json.loads(json_text)[key]
    if isinstance(v, dict):
        v = "(" + ", ".join(f"{k}: {n}" for k, n in sorted(v.items())) + ")"
    print(v)


def cmd_randreads(path, local, count, size, seed):
    """COUNT reads of SIZE bytes at random offsets (seeded) of PATH, each
    compared with the same bytes of LOCAL. A read that fails with EIO is
    tried once more. Prints JSON: ok, eio, retry_ok, wrong, median_ms, p90_ms."""
    import errno
    import random
    import statistics

    count, size = int(count), int(size)
    rnd = random.Random(int(seed))
    total = os.path.getsize(local)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    except OSError:
        pass
    out = {"ok": 0, "eio": 0, "retry_ok": 0, "wrong": 0}
    times = []
    with open(local, "rb") as ref:
        for _ in range(count):
            at = rnd.randrange(0, total - size)
            ref.seek(at)
            want = ref.read(size)
            for attempt in (0, 1):
                t0 = time.perf_counter()
                try:
                    got = os.pread(fd, size, at)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    out["eio"] += 1
                    continue
                times.append((time.perf_counter() - t0) * 1000)
                if got != want:
                    out["wrong"] += 1
                elif attempt == 0:
                    out["ok"] += 1
                else:
                    out["retry_ok"] += 1
                break
    os.close(fd)
    times.sort()
    out["median_ms"] = round(statistics.median(times), 3) if times else None
    out["p90_ms"] = round(times[int(len(times) * 0.9)], 3) if times else None
    print(json.dumps(out))


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    name = "cmd_" + sys.argv[1].replace("-", "_")
    fn = globals().get(name)
    if not fn:
        die(f"unknown command {sys.argv[1]}")
    fn(*sys.argv[2:])


if __name__ == "__main__":
    main()
