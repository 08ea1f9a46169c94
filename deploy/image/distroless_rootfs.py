"""Writes a tarball of a distroless/cc-debian12:nonroot stand-in, taken from a Debian rootfs.

gcr.io/distroless/cc-debian12 is a handful of Debian 12 packages' files with no shell and no
package manager, plus users root, nobody and nonroot (65532). This copies the same packages'
files (from dpkg's file lists in a debootstrap rootfs that has them installed), the CA bundle
that ca-certificates' postinst generated, and writes /etc/passwd and /etc/group, so the image
under test runs on what the real base gives it and nothing more.

    python3 distroless_rootfs.py ROOTFS OUT.tar
"""

import io
import os
import sys
import tarfile

# distroless's cc-debian12 package set (static-debian12's, plus the C and C++ runtimes).
PACKAGES = ["base-files", "netbase", "tzdata", "ca-certificates", "libc6", "libgcc-s1",
            "libgomp1", "libssl3", "libstdc++6"]
# bookworm's merged /usr: these top-level entries are symlinks into /usr.
USR_LINKS = ["bin", "lib", "lib64", "sbin"]
PASSWD = """root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
"""
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def package_paths(root: str) -> set[str]:
    paths: set[str] = set()
    info = os.path.join(root, "var/lib/dpkg/info")
    for package in PACKAGES:
        lists = [f for f in (f"{package}.list", f"{package}:amd64.list")
                 if os.path.exists(os.path.join(info, f))]
        if not lists:
            sys.exit(f"{package} is not installed in {root}")
        with open(os.path.join(info, lists[0])) as f:
            paths.update(line.strip().lstrip("/") for line in f if line.strip() not in ("", "/."))
    for dirpath, _, files in os.walk(os.path.join(root, "etc/ssl/certs")):
        paths.update(os.path.relpath(os.path.join(dirpath, n), root) for n in files)
    return paths


def in_rootfs(root: str, path: str) -> str:
    """PATH with its directories resolved inside ROOT (lib/x -> usr/lib/x), itself unresolved."""
    parent = os.path.realpath(os.path.join(root, os.path.dirname(path)))
    if os.path.commonpath([parent, os.path.realpath(root)]) != os.path.realpath(root):
        sys.exit(f"{path} leaves the rootfs")
    return os.path.relpath(os.path.join(parent, os.path.basename(path)), os.path.realpath(root))


def text_entry(name: str, text: str) -> tuple[tarfile.TarInfo, io.BytesIO]:
    data = text.encode()
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode = len(data), 0o644
    return entry, io.BytesIO(data)


def main() -> None:
    root, out = sys.argv[1], sys.argv[2]
    members = {in_rootfs(root, p) for p in package_paths(root)} | set(USR_LINKS)
    members -= {"etc/passwd", "etc/group"}
    with tarfile.open(out, "w") as tar:
        for name in sorted(members):
            full = os.path.join(root, name)
            if os.path.lexists(full):
                tar.add(full, arcname=name, recursive=False)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            tar.addfile(*text_entry(name, text))
        for name, mode, uid in (("tmp", 0o1777, 0), ("home/nonroot", 0o700, 65532)):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode, entry.uid, entry.gid = tarfile.DIRTYPE, mode, uid, uid
            tar.addfile(entry)


if __name__ == "__main__":
    main()
