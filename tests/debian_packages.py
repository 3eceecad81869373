"""The Debian packages the suite runs for real (chromium, prometheus), installed with apt-get when
missing and we are root; otherwise the error says which package to install.

One installer for every package: apt-get holds dpkg's lock while it works, so two xdist workers
installing two packages at once made the second fail ("Could not get lock /var/lib/dpkg/lock-frontend").
Installs take one file lock in turn and apt-get waits for dpkg's lock as well. `make test` installs
both before the workers start (`tests.setup_services`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path(os.environ.get("RELEASE_TEST_CHROMIUM", "/usr/bin/chromium"))
SUITE_PACKAGES = {"chromium": str(CHROMIUM), "prometheus": "prometheus"}  # Debian package -> binary
INSTALL_LOCK = Path(tempfile.gettempdir()) / "release-tests-apt.lock"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


class PackageUnavailable(RuntimeError):
    """A package the tests need is missing and cannot be installed here; the message says what to do."""


def ensure_package(binary: str, package: str) -> Path:
    """Path of `binary` (a path, or a name looked up on PATH), installing Debian's `package` if missing."""
    if found := _find(binary):
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PackageUnavailable(f"{binary} is missing and we are not root with apt-get to install it: run "
                                 f"`sudo apt-get install -y --no-install-recommends {package}`")
    INSTALL_LOCK.touch(exist_ok=True)
    with open(INSTALL_LOCK) as lock:  # parallel workers: one installs at a time, the others then find it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if found := _find(binary):
            return found
        if not POLICY_RC_D.exists():
            # A package's postinst may start a system daemon (prometheus does); exit 101 = "not allowed".
            POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
            POLICY_RC_D.chmod(0o755)
        result = _apt("install", "-y", "--no-install-recommends", package)
        if result.returncode != 0:  # usually "Unable to locate package": stale or empty package lists
            _apt("update")
            result = _apt("install", "-y", "--no-install-recommends", package)
        if result.returncode != 0 or not (found := _find(binary)):
            raise PackageUnavailable(f"could not install the Debian package {package!r} "
                                     f"(apt-get exit {result.returncode}):\n{result.stdout[-2000:]}")
        return found


def _find(binary: str) -> Path | None:
    if os.sep in binary:
        return Path(binary) if Path(binary).exists() else None
    found = shutil.which(binary)
    return Path(found) if found else None


def _apt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
    )
