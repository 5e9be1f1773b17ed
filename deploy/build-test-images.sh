#!/usr/bin/env bash
# Builds the container images the tests run, from Debian's busybox-static (/bin/busybox), with no
# downloads: the tests must not depend on the internet or on a registry.
#   deploy/build-test-images.sh OUTDIR    writes OUTDIR/busybox.tar and prints its path
# busybox.tar is an OCI image layout archive (oci-layout, index.json, blobs/sha256/...) of one image,
# named $IMAGE_NAME (default keel.test/busybox:1); `ctr images import` and `skopeo copy oci-archive:`
# take it. Its single uncompressed layer holds bin/busybox, a bin/<applet> -> busybox link per applet,
# the usual top-level directories and a minimal etc/passwd and etc/group. Every byte is fixed (sorted
# entries, owner 0, mtime 0, no creation time), so the digests are the same on every run.
set -euo pipefail
out="${1:?usage: $0 OUTDIR}"
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "$busybox is missing: apt install busybox-static" >&2; exit 1; }
# The dynamically linked busybox package would fail in the image, which has no libc.
if ! "$busybox" --list >/dev/null 2>&1 || file -L "$busybox" 2>/dev/null | grep -q dynamically; then
  echo "$busybox is not a static busybox: apt install busybox-static" >&2
  exit 1
fi
case "$(dpkg --print-architecture)" in # Debian's names to OCI's (GOARCH)
  amd64) arch=amd64 variant= ;;
  arm64) arch=arm64 variant=v8 ;;
  armhf) arch=arm variant=v7 ;;
  i386) arch=386 variant= ;;
  ppc64el) arch=ppc64le variant= ;;
  *) arch="$(dpkg --print-architecture)" variant= ;;
esac
mkdir -p "$out"
IMAGE_NAME="${IMAGE_NAME:-keel.test/busybox:1}" ARCH="$arch" VARIANT="$variant" \
  python3 - "$busybox" "$out/busybox.tar" "$("$busybox" --list)" <<'EOF'
import hashlib, io, json, os, sys, tarfile

busybox, dest, applets = sys.argv[1], sys.argv[2], sorted(set(sys.argv[3].split()) - {"busybox"})
name = os.environ["IMAGE_NAME"]
tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"

def tar(entries):
    """A deterministic tar of (name, type, mode, data or link target), in name order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for path, kind, mode, data in sorted(entries):
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = kind, mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if kind == tarfile.SYMTYPE:
                info.linkname = data
                t.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()

D, F, L = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE
with open(busybox, "rb") as f:
    binary = f.read()
layer = tar(
    [(d, D, 0o755, None) for d in ("bin", "dev", "etc", "home", "proc", "sys", "var")]
    + [("root", D, 0o700, None), ("tmp", D, 0o1777, None)]
    + [("bin/busybox", F, 0o755, binary)]
    + [("bin/" + a, L, 0o777, "busybox") for a in applets]
    + [("etc/passwd", F, 0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"),
       ("etc/group", F, 0o644, b"root:x:0:\nnogroup:x:65534:\n")])

blobs = {}
def blob(media_type, data):
    """Stores data as a blob and returns its descriptor."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}

def js(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

platform = {"architecture": os.environ["ARCH"], "os": "linux"}
if os.environ["VARIANT"]:
    platform["variant"] = os.environ["VARIANT"]
layer_desc = blob("application/vnd.oci.image.layer.v1.tar", layer)
config = blob("application/vnd.oci.image.config.v1+json", js(dict(platform,
    config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
    rootfs={"type": "layers", "diff_ids": [layer_desc["digest"]]})))
manifest = blob("application/vnd.oci.image.manifest.v1+json", js({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config, "layers": [layer_desc]}))
manifest["platform"] = platform
manifest["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest]}

archive = [("oci-layout", F, 0o644, js({"imageLayoutVersion": "1.0.0"})), ("index.json", F, 0o644, js(index)),
           ("blobs", D, 0o755, None), ("blobs/sha256", D, 0o755, None)]
archive += [("blobs/sha256/" + d.split(":")[1], F, 0o644, data) for d, data in blobs.items()]
with open(dest + ".tmp", "wb") as f:  # replaced whole, so a reader never sees half an archive
    f.write(tar(archive))
os.replace(dest + ".tmp", dest)
EOF
echo "$out/busybox.tar"
