"""Fetch, verify and copy the book's JavaScript packages (no Node needed).

Each package in ``web-assets.lock.json`` (beside this file) is an npm tarball pinned by version
and by the ``sha512`` integrity hash that the npm registry publishes for it. A tarball is
downloaded once into ``<cache dir>/web/npm`` (``$FKP_CACHE_DIR``, default ``~/.cache/fkp``),
checked against its hash every time it is used (a mismatch is an error, never a warning), and the
listed files (``files``: member -> target) and folders (``trees``: every file under a member
prefix -> a target prefix) are copied out of it. Once the cache holds them, the build works
offline, and so does the built book. ``used_by`` says which step installs a package: ``demo``
(the in-browser page, :mod:`fkp_demo`) or ``math`` (MathJax for every page, :mod:`offline_math`).

The registry is the one npm would use here: ``$FKP_NPM_REGISTRY`` (or
``$NPM_CONFIG_REGISTRY``), else ``npm config get registry``, else a ``registry=`` line of
``~/.npmrc``, else npm's own default, :data:`DEFAULT_REGISTRY` (no npm needs to be installed).

    python book/_ext/web_assets.py DIR [USED_BY]   # fetch (or reuse) and copy into DIR
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

LOCK = Path(__file__).with_name("web-assets.lock.json")
DEFAULT_REGISTRY = "https://registry.npmjs.org"
"""npm's default registry, used when nothing here names another."""


class WebAssetError(RuntimeError):
    """A package could not be fetched, or its bytes do not match the pinned hash."""


def cache_dir() -> Path:
    """``<the course's cache>/web/npm`` (:func:`fkp_helpers.data.default_cache_dir`)."""
    from fkp_helpers.data import default_cache_dir

    return default_cache_dir() / "web" / "npm"


def registry() -> str:
    """The npm registry's base URL, as npm itself is configured (see the module's docstring)."""
    for var in ("FKP_NPM_REGISTRY", "NPM_CONFIG_REGISTRY", "npm_config_registry"):
        if os.environ.get(var):
            return os.environ[var].rstrip("/")
    npm = shutil.which("npm")
    if npm:
        try:
            out = subprocess.run(
                [npm, "config", "get", "registry"], capture_output=True, text=True, timeout=60
            ).stdout.strip()
            if out.startswith("http"):
                return out.rstrip("/")
        except (OSError, subprocess.SubprocessError):
            pass
    npmrc = Path.home() / ".npmrc"
    if npmrc.is_file():
        for line in npmrc.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "registry" and value.strip().startswith("http"):
                return value.strip().rstrip("/")
    return DEFAULT_REGISTRY


def tarball_name(pkg: dict) -> str:
    return f"{pkg['name'].replace('/', '__')}-{pkg['version']}.tgz"


def tarball_url(pkg: dict, base: str) -> str:
    """The registry's standard tarball address: ``BASE/NAME/-/BASENAME-VERSION.tgz``."""
    basename = pkg["name"].split("/")[-1]
    return f"{base}/{pkg['name']}/-/{basename}-{pkg['version']}.tgz"


def integrity_of(path: Path, algo: str = "sha512") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{algo}-{base64.b64encode(h.digest()).decode()}"


def verify(path: Path, pkg: dict) -> None:
    algo = pkg["integrity"].split("-", 1)[0]
    got = integrity_of(path, algo)
    if got != pkg["integrity"]:
        raise WebAssetError(
            f"{pkg['name']}@{pkg['version']}: {path} does not match the pinned integrity hash "
            f"(expected {pkg['integrity']}, got {got}); delete it to fetch it again"
        )


def fetch(pkg: dict) -> Path:
    """The verified tarball of ``pkg``, from the cache or downloaded into it."""
    path = cache_dir() / tarball_name(pkg)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        url = tarball_url(pkg, registry())
        tmp = path.with_name(path.name + f".partial-{os.getpid()}")
        print(f"web_assets: fetching {pkg['name']}@{pkg['version']}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            verify(tmp, pkg)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise WebAssetError(
                f"{pkg['name']}@{pkg['version']}: cannot download it ({e}); the book's build "
                f"needs it once, then it is cached in {path.parent}"
            ) from e
        except WebAssetError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    verify(path, pkg)
    return path


def packages() -> list[dict]:
    return json.loads(LOCK.read_text())["packages"]


def _members(tar: tarfile.TarFile, pkg: dict) -> list[tuple[tarfile.TarInfo, str]]:
    """``(member, target)`` for every file the lock lists for ``pkg``, in the tarball's order."""
    where = f"{pkg['name']}@{pkg['version']}"
    out = []
    for member, target in pkg.get("files", {}).items():
        try:
            info = tar.getmember(member)
        except KeyError:
            info = None
        if info is None or not info.isfile():
            raise WebAssetError(f"{where}: no file {member}")
        out.append((info, target))
    for prefix, target in pkg.get("trees", {}).items():
        found = [i for i in tar.getmembers() if i.isfile() and i.name.startswith(prefix)]
        if not found:
            raise WebAssetError(f"{where}: no files under {prefix}")
        out += [(i, target + i.name[len(prefix) :]) for i in found]
    for _, target in out:
        parts = Path(target).parts
        if Path(target).is_absolute() or ".." in parts or not parts:
            raise WebAssetError(f"{where}: refusing to write outside the folder: {target!r}")
    return out


def install(out_dir: str | os.PathLike, used_by: str | None = None) -> dict[str, int]:
    """Copy every locked file of the packages ``used_by`` (``demo``, ``math``; None: all) into
    ``out_dir``; returns ``{relative path: bytes}``."""
    out_dir = Path(out_dir)
    copied = {}
    chosen = [p for p in packages() if used_by is None or p.get("used_by") == used_by]
    if not chosen:
        raise WebAssetError(f"no package in {LOCK.name} is used by {used_by!r}")
    for pkg in chosen:
        with tarfile.open(fetch(pkg), "r:gz") as tar:
            for info, target in _members(tar, pkg):
                dest = out_dir / target
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(info) as f, open(dest, "wb") as g:
                    shutil.copyfileobj(f, g)
                copied[target] = dest.stat().st_size
    return copied


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    for name, size in install(*sys.argv[1:]).items():
        print(f"{size / 1e6:8.2f} MB  {name}")
