"""The book's JavaScript packages (the in-browser page's, and MathJax for every formula): pinned,
verified against their hashes, cached.

``book/_ext/web_assets.py`` is the book's build step (no Node needed); these tests run it on
tarballs made here, and (marked ``network``) compare the lock file with what the npm registry
publishes for each pinned version. ``book/_ext/offline_math.py`` puts MathJax where
``_config.yml``'s ``mathjax_path`` says.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import offline_math  # noqa: E402
import web_assets  # noqa: E402

sys.path.remove(str(ROOT / "book" / "_ext"))


def _tarball(path: Path, files: dict[str, bytes]) -> str:
    """Write an npm-style tarball; return its sha512 integrity string."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package 'demo-lib@1.0.0' already in a fresh cache, and a lock file that pins it."""
    monkeypatch.setenv("FKP_CACHE_DIR", str(tmp_path / "cache"))
    pkg = {"name": "@scope/demo-lib", "version": "1.0.0", "files": {}}
    cached = web_assets.cache_dir() / web_assets.tarball_name(pkg)
    cached.parent.mkdir(parents=True)
    pkg["integrity"] = _tarball(
        cached, {"package/dist/lib.js": b"console.log(1);", "package/LICENSE": b"MIT"}
    )
    pkg["files"] = {"package/dist/lib.js": "lib/lib.js", "package/LICENSE": "lib/LICENSE"}
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"packages": [pkg]}))
    monkeypatch.setattr(web_assets, "LOCK", lock)
    return pkg, cached


@pytest.fixture
def two_packages(tmp_path, monkeypatch):
    """A 'demo' package with one file and a 'math' package with a file and a folder (a tree)."""
    monkeypatch.setenv("FKP_CACHE_DIR", str(tmp_path / "cache"))
    web_assets.cache_dir().mkdir(parents=True)
    demo = {"name": "demo-lib", "version": "1.0.0", "used_by": "demo"}
    demo["integrity"] = _tarball(
        web_assets.cache_dir() / web_assets.tarball_name(demo), {"package/lib.js": b"1;"}
    )
    demo["files"] = {"package/lib.js": "lib/lib.js"}
    math = {"name": "mathlib", "version": "3.0.0", "used_by": "math"}
    math["integrity"] = _tarball(
        web_assets.cache_dir() / web_assets.tarball_name(math),
        {
            "package/es5/tex.js": b"typeset();",
            "package/es5/fonts/a.woff": b"AAAA",
            "package/es5/fonts/sub/b.woff": b"BB",
            "package/es5/other.js": b"not copied",
        },
    )
    math["files"] = {"package/es5/tex.js": "mathlib/tex.js"}
    math["trees"] = {"package/es5/fonts/": "mathlib/fonts/"}
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"packages": [demo, math]}))
    monkeypatch.setattr(web_assets, "LOCK", lock)
    return demo, math


def test_the_lock_pins_exact_versions_with_sha512_hashes():
    packages = web_assets.packages()
    assert {p["name"] for p in packages} == {"onnxruntime-web", "@techstark/opencv-js", "mathjax"}
    for p in packages:
        assert p["version"][0].isdigit() and not set(p["version"]) & set("^~*<>= "), p
        algo, b64 = p["integrity"].split("-", 1)
        assert algo == "sha512" and len(base64.b64decode(b64)) == 64
        assert p["files"] and all(m.startswith("package/") for m in p["files"])
        assert p["used_by"] in ("demo", "math"), p["name"]
        for prefix, target in p.get("trees", {}).items():
            assert prefix.startswith("package/") and prefix.endswith("/") and target.endswith("/")


def test_install_copies_only_the_packages_used_by_and_whole_trees(two_packages, tmp_path):
    copied = web_assets.install(tmp_path / "math", used_by="math")
    assert copied == {
        "mathlib/tex.js": 10,
        "mathlib/fonts/a.woff": 4,
        "mathlib/fonts/sub/b.woff": 2,
    }
    assert (tmp_path / "math/mathlib/fonts/sub/b.woff").read_bytes() == b"BB"
    assert (
        not (tmp_path / "math/lib").exists() and not (tmp_path / "math/mathlib/other.js").exists()
    )
    assert web_assets.install(tmp_path / "demo", used_by="demo") == {"lib/lib.js": 2}
    assert len(web_assets.install(tmp_path / "all")) == 4  # used_by None: every package
    with pytest.raises(
        web_assets.WebAssetError, match="no package in lock.json is used by 'demoo'"
    ):
        web_assets.install(tmp_path / "x", used_by="demoo")


def test_an_empty_tree_and_a_target_outside_the_folder_are_refused(two_packages, tmp_path):
    demo, math = two_packages
    math["trees"] = {"package/es5/font/": "mathlib/fonts/"}  # a typo: matches nothing
    web_assets.LOCK.write_text(json.dumps({"packages": [demo, math]}))
    with pytest.raises(
        web_assets.WebAssetError, match="mathlib@3.0.0: no files under package/es5/font/"
    ):
        web_assets.install(tmp_path / "out", used_by="math")
    math["trees"] = {"package/es5/fonts/": "../../escaped/"}
    web_assets.LOCK.write_text(json.dumps({"packages": [demo, math]}))
    with pytest.raises(
        web_assets.WebAssetError, match="outside the folder: '../../escaped/a.woff'"
    ):
        web_assets.install(tmp_path / "out", used_by="math")
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


def test_the_books_mathjax_path_is_a_file_the_lock_installs():
    """``_config.yml`` points Sphinx at MathJax inside the built book (no CDN), and the lock's
    ``math`` package provides exactly that file."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    path = config["sphinx"]["config"]["mathjax_path"]
    assert offline_math.is_local(path), path
    assert "offline_math" in config["sphinx"]["local_extensions"]
    (mathjax,) = [p for p in web_assets.packages() if p["used_by"] == "math"]
    assert path in {f"{offline_math.VENDOR}/{t}" for t in mathjax["files"].values()}
    assert any("output/chtml/" in t for t in mathjax["trees"].values())  # its web fonts


@pytest.mark.parametrize(
    "path, local",
    [
        ("vendor/mathjax/tex-mml-chtml.js", True),
        ("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js", False),
        ("//cdn.example.org/tex.js", False),
        ("file:///opt/mathjax/tex.js", False),
    ],
)
def test_only_a_relative_mathjax_path_is_copied_into_the_book(path, local):
    assert offline_math.is_local(path) is local


def test_install_mathjax_names_a_path_the_packages_lack(two_packages, tmp_path):
    from sphinx.errors import ExtensionError

    files = offline_math.install_mathjax(tmp_path / "_static", "vendor/mathlib/tex.js")
    assert (tmp_path / "_static/vendor/mathlib/fonts/a.woff").is_file() and len(files) == 3
    with pytest.raises(ExtensionError, match="'vendor/mathlib/tex-chtml.js' is not a file"):
        offline_math.install_mathjax(tmp_path / "_static", "vendor/mathlib/tex-chtml.js")


def test_install_copies_the_listed_files_from_a_verified_tarball(fake_package, tmp_path):
    copied = web_assets.install(tmp_path / "out")
    assert copied == {"lib/lib.js": 15, "lib/LICENSE": 3}
    assert (tmp_path / "out/lib/lib.js").read_bytes() == b"console.log(1);"


def test_a_tampered_tarball_is_refused(fake_package, tmp_path):
    pkg, cached = fake_package
    _tarball(cached, {"package/dist/lib.js": b"steal(document.cookie);", "package/LICENSE": b""})
    with pytest.raises(web_assets.WebAssetError, match="does not match the pinned integrity"):
        web_assets.install(tmp_path / "out")
    assert not (tmp_path / "out/lib/lib.js").exists()


def test_a_file_missing_from_the_package_is_named(fake_package, tmp_path, monkeypatch):
    pkg, _ = fake_package
    pkg["files"]["package/dist/other.js"] = "lib/other.js"
    web_assets.LOCK.write_text(json.dumps({"packages": [pkg]}))
    with pytest.raises(web_assets.WebAssetError, match="no file package/dist/other.js"):
        web_assets.install(tmp_path / "out")


def test_download_failures_say_what_and_leave_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FKP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FKP_NPM_REGISTRY", "http://127.0.0.1:9")  # nothing listens on port 9
    pkg = {"name": "demo-lib", "version": "1.0.0", "integrity": "sha512-x", "files": {}}
    with pytest.raises(web_assets.WebAssetError, match="demo-lib@1.0.0: cannot download it"):
        web_assets.fetch(pkg)
    assert list(web_assets.cache_dir().iterdir()) == []


def test_the_registry_is_npms_own_choice_and_needs_no_npm(tmp_path, monkeypatch):
    for var in ("FKP_NPM_REGISTRY", "NPM_CONFIG_REGISTRY", "npm_config_registry"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(web_assets.shutil, "which", lambda name: None)  # no npm installed
    monkeypatch.setenv("HOME", str(tmp_path))
    assert web_assets.registry() == web_assets.DEFAULT_REGISTRY == "https://registry.npmjs.org"
    (tmp_path / ".npmrc").write_text("registry=https://mirror.example/npm/\n")
    assert web_assets.registry() == "https://mirror.example/npm"
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "http://r/")
    assert web_assets.registry() == "http://r"


def test_tarball_urls_follow_the_registry_layout():
    pkg = {"name": "@techstark/opencv-js", "version": "4.12.0-release.1"}
    assert web_assets.tarball_url(pkg, "http://r") == (
        "http://r/@techstark/opencv-js/-/opencv-js-4.12.0-release.1.tgz"
    )


def test_nothing_large_is_committed():
    """The page's libraries and model reach the build at build time; the repository holds no
    file over 2 MB."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    sizes = {n.decode(): (ROOT / n.decode()).stat().st_size for n in names if n}
    assert sizes and max(sizes.values()) < 2_000_000, max(sizes, key=sizes.get)


@pytest.mark.network
@pytest.mark.parametrize("pkg", web_assets.packages(), ids=lambda p: p["name"])
def test_network_lock_matches_the_published_integrity(pkg):
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the published hashes were not checked")
    done = subprocess.run(
        [npm, "view", f"{pkg['name']}@{pkg['version']}", "dist.integrity"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.skip(f"npm registry not reachable: {done.stderr.strip()[-300:]}")
    assert done.stdout.strip() == pkg["integrity"]
