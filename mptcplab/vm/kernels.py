"""Which kernel a `--kernel KERNEL` names, and getting it: the host's own, an image on disk (a
`bzImage` just built, `/boot/vmlinuz-...`), or a Debian `linux-image-*-amd64` package fetched
with apt-get into the lab's cache and unpacked there with its modules (never into /boot).

    resolve(spec, log=...)       -> Kernel        what the user asked for, fetched if needed
    debian_offers(spec)          -> [DebianKernel] what the configured apt sources offer
    cached()                     -> [Kernel]      what the cache holds
    image_release(path)          -> str           the release an x86 bzImage says it is
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mptcplab.errors import BadInput, LabError, MissingTool

CACHE_ENV = "MPTCPLAB_CACHE"
HOST = "host"
# "6.1", "6.12", "6.1.0-57", "6.12.117+deb12": a Debian kernel ABI name or a prefix of one
DEBIAN_SPEC = re.compile(r"^\d+\.\d+(?:[.\-+][0-9A-Za-z.+\-]*)?$")
_PKG = re.compile(r"^linux-image-(?P<abi>\d+\.\d+[0-9A-Za-z.+\-]*?)-amd64$")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Kernel:
    """A kernel to run the lab on. `image` is None for the host's running kernel (no VM)."""

    spec: str                  # what the user wrote: "6.12", "/boot/vmlinuz-6.1.0-57-amd64", "host"
    release: str               # what `uname -r` will say
    image: Path | None         # the bzImage to boot
    source: str                # where it comes from, in words

    @property
    def label(self) -> str:
        """The matrix column: the spec as written ("6.12", "host"), a file's name for paths."""
        if self.image is None or DEBIAN_SPEC.match(self.spec) or self.spec == HOST:
            return self.spec
        return self.release or Path(self.spec).name

    @property
    def native(self) -> bool:
        return self.image is None

    def as_dict(self) -> dict[str, str | None]:
        return {"label": self.label, "spec": self.spec, "release": self.release,
                "image": str(self.image) if self.image else None, "source": self.source}


@dataclass
class DebianKernel:
    package: str               # linux-image-6.12.117+deb12-amd64
    abi: str                   # 6.12.117+deb12 (the release is abi + "-amd64")
    version: str               # the package version apt would fetch: 6.12.117-1~deb12u1

    @property
    def release(self) -> str:
        return f"{self.abi}-amd64"


# -- the cache -------------------------------------------------------------------------------

def cache_root() -> Path:
    """$MPTCPLAB_CACHE, else $XDG_CACHE_HOME/mptcplab, else ~/.cache/mptcplab."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mptcplab"


def kernels_dir() -> Path:
    return cache_root() / "kernels"


def _cached_image(root: Path, release: str) -> Path | None:
    image = root / "boot" / f"vmlinuz-{release}"
    return image if image.is_file() else None


def cached() -> list[Kernel]:
    """The Debian kernels unpacked in the cache (newest first)."""
    out = []
    base = kernels_dir()
    if base.is_dir():
        for root in base.iterdir():
            image = _cached_image(root, root.name)
            if image is not None:
                source = (root / "SOURCE").read_text().strip() if (root / "SOURCE").exists() \
                    else f"unpacked in {root}"
                out.append(Kernel(root.name.removesuffix("-amd64"), root.name, image, source))
    return sorted(out, key=lambda k: _natural(k.release), reverse=True)


# -- images on disk --------------------------------------------------------------------------

def image_release(path: Path) -> str:
    """The release string an x86 bzImage carries in its setup header (what `uname -r` will
    say); BadInput when the file is not one (a vmlinux ELF, a module, anything else)."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x210 + 0x4000)
    except OSError as exc:
        raise BadInput(f"cannot read kernel image {path}: {exc.strerror}") from None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        hint = " (an ELF vmlinux: boot arch/x86/boot/bzImage instead)" \
            if head[:4] == b"\x7fELF" else ""
        raise BadInput(f"{path} is not an x86 kernel image (no bzImage header){hint}")
    offset = int.from_bytes(head[0x20E:0x210], "little")
    if not offset:
        return ""
    with open(path, "rb") as f:
        f.seek(offset + 0x200)
        text = f.read(256).split(b"\0", 1)[0].decode("ascii", "replace")
    return text.split(" ", 1)[0]


# -- Debian packages -------------------------------------------------------------------------

def _natural(text: str) -> list[tuple[int, int | str]]:
    """Sort key where 6.1.0-57 > 6.1.0-9 and 6.12.117 > 6.12.99."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p]


def _matches(spec: str, abi: str) -> bool:
    return abi == spec or (abi.startswith(spec) and abi[len(spec)] in ".-+")


def _apt(args: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(args[0]) is None:
        raise MissingTool(f"{args[0]} not found: Debian kernels come from apt (a Debian or "
                          "Ubuntu machine); give a kernel image path instead")
    return subprocess.run(args, capture_output=True, text=True, check=False)


def debian_offers(spec: str, log: Log | None = None, limit: int = 8) -> list[DebianKernel]:
    """The linux-image-<abi>-amd64 packages of the configured apt sources whose ABI starts
    with `spec` ("6.12" -> 6.12.117+deb12, ...), newest first, each with the version apt
    would fetch. Only the generic amd64 flavour (not cloud, rt, dbg, unsigned)."""
    names = _apt(["apt-cache", "pkgnames", "linux-image-"]).stdout.split()
    if not names and os.geteuid() == 0 and log is not None:
        log("apt knows no linux-image packages: running apt-get update")
        _apt(["apt-get", "update", "-qq"])
        names = _apt(["apt-cache", "pkgnames", "linux-image-"]).stdout.split()
    found = [(m["abi"], name) for name in names
             if (m := _PKG.match(name)) and not re.search(r"cloud|-rt$|-rt-", m["abi"])
             and _matches(spec, m["abi"])]
    found.sort(key=lambda t: _natural(t[0]), reverse=True)
    out = []
    if not found:
        return out
    # one apt-cache call for all of them: "NAME:\n  Installed: ...\n  Candidate: VERSION"
    policy = _apt(["apt-cache", "policy", *(name for _, name in found[:40])]).stdout
    candidate = dict(re.findall(r"^(\S+):\n(?:\s+Installed:.*\n)?\s+Candidate:\s*(\S+)",
                                policy, re.MULTILINE))
    for abi, name in found:
        if candidate.get(name, "(none)") != "(none)":
            out.append(DebianKernel(name, abi, candidate[name]))
            if len(out) >= limit:
                break
    return out


def _available_series() -> str:
    names = _apt(["apt-cache", "pkgnames", "linux-image-"]).stdout.split()
    series = {".".join(m["abi"].split(".")[:2]).split("-")[0] for n in names
              if (m := _PKG.match(n)) and "cloud" not in m["abi"] and "-rt" not in m["abi"]}
    return ", ".join(sorted(series, key=_natural)) or "none"


def fetch(deb: DebianKernel, log: Log = _quiet) -> Kernel:
    """Download `deb` with apt-get and unpack it (kernel and modules) into the cache, then
    index its modules with depmod. A partly fetched kernel never stays in the cache: it is
    unpacked beside it and renamed into place at the end."""
    target = kernels_dir() / deb.release
    image = _cached_image(target, deb.release)
    if image is not None:
        return Kernel(deb.abi, deb.release, image, (target / "SOURCE").read_text().strip())
    for tool, package in (("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("depmod", "kmod")):
        if shutil.which(tool) is None:
            raise MissingTool(f"{tool} not found (Debian package {package}): needed to fetch "
                              f"{deb.package}")
    kernels_dir().mkdir(parents=True, exist_ok=True)
    log(f"fetching {deb.package} {deb.version} (apt-get download) into {target}")
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=kernels_dir()))
    try:
        got = subprocess.run(["apt-get", "download", "-q", f"{deb.package}={deb.version}"],
                             cwd=work, capture_output=True, text=True, check=False)
        debs = list(work.glob("*.deb"))
        if got.returncode or not debs:
            why = (got.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise LabError(f"apt-get download {deb.package} failed: {why}")
        root = work / "root"
        unpack = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)],
                                capture_output=True, text=True, check=False)
        if unpack.returncode:
            raise LabError(f"dpkg-deb -x {debs[0].name} failed: {unpack.stderr.strip()}")
        moddir = next((d for d in (root / "lib/modules", root / "usr/lib/modules")
                       if (d / deb.release).is_dir()), None)
        if moddir is not None:
            base = moddir.parent.parent
            subprocess.run(["depmod", "-a", "-b", str(base), deb.release],
                           capture_output=True, check=False)
        if _cached_image(root, deb.release) is None:
            raise LabError(f"{deb.package} holds no boot/vmlinuz-{deb.release}")
        source = f"Debian package {deb.package} {deb.version}"
        (root / "SOURCE").write_text(source + "\n")
        debs[0].unlink()
        os.rename(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{deb.package} {deb.version} is in {target} "
        f"({sum(f.stat().st_size for f in target.rglob('*') if f.is_file()) >> 20} MiB)")
    image = _cached_image(target, deb.release)
    assert image is not None
    return Kernel(deb.abi, deb.release, image, source)


# -- resolving --kernel ----------------------------------------------------------------------

def resolve(spec: str, *, log: Log = _quiet, download: bool = True) -> Kernel:
    """The kernel `spec` names: "host" (this machine's, natively), a path to a kernel image,
    or a Debian kernel ("6.1", "6.12", "6.12.117+deb12"): the newest the apt sources offer,
    fetched into the cache unless it is there already; the newest cached one when apt offers
    none (no network, no apt lists)."""
    if spec == HOST:
        return Kernel(HOST, os.uname().release, None, "the running kernel (no VM)")
    path = Path(spec).expanduser()
    if "/" in spec or path.exists():
        if path.is_dir():
            for rel in ("arch/x86/boot/bzImage", "arch/x86_64/boot/bzImage"):
                if (path / rel).is_file():
                    path = path / rel
                    break
            else:
                raise BadInput(f"{spec} is a directory without arch/x86/boot/bzImage "
                               "(build the kernel first, or give the image's path)")
        if not path.is_file():
            raise BadInput(f"no kernel image at {spec}")
        path = path.resolve()
        return Kernel(spec, image_release(path), path, f"image {path}")
    if not DEBIAN_SPEC.match(spec):
        raise BadInput(f"--kernel {spec!r}: give `host`, a kernel image path, or a Debian "
                       "kernel version such as 6.1 or 6.12")
    offers = debian_offers(spec, log, limit=1) if shutil.which("apt-cache") else []
    in_cache = [k for k in cached() if _matches(spec, k.release.removesuffix("-amd64"))]
    if offers:
        best = offers[0]
        hit = next((k for k in in_cache if k.release == best.release), None)
        if hit is not None:
            return Kernel(spec, hit.release, hit.image, hit.source)
        if not download:
            raise LabError(f"{best.package} is not in the cache ({kernels_dir()}): "
                           f"fetch it with `mptcplab vm fetch {spec}`")
        got = fetch(best, log)
        return Kernel(spec, got.release, got.image, got.source)
    if in_cache:
        k = in_cache[0]
        log(f"apt offers no linux-image-{spec}*-amd64; using the cached {k.release}")
        return Kernel(spec, k.release, k.image, k.source)
    have = _available_series() if shutil.which("apt-cache") else "none (no apt here)"
    raise MissingTool(f"no Debian kernel package linux-image-{spec}*-amd64 in the configured "
                      f"apt sources (run apt-get update?; they offer: {have}) and none in "
                      f"{kernels_dir()}")
