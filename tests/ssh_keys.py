"""Real SSH keys for tests: made by ssh-keygen, written as an OpenSSH allowed_signers file, and an
ssh-agent to sign through."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path


def make_keys(folder: Path, *names: str) -> dict[str, Path]:
    """name -> private key file (no passphrase); the public key is beside it as .pub."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name in names:
        path = folder / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
        keys[name] = path
    return keys


def public(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


def allowed_signers(path: Path, keys: dict[str, Path], namespaces: str | None = None) -> Path:
    option = f' namespaces="{namespaces}"' if namespaces else ""
    path.write_text("".join(f"{name}{option} {public(key)}\n" for name, key in keys.items()))
    return path


@contextmanager
def ssh_agent(*keys: Path):
    """A private ssh-agent holding `keys`; SSH_AUTH_SOCK points at it inside the block."""
    out = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(part.split("=", 1) for line in out.split(";") for part in [line.strip()] if "=" in part)
    saved = {k: os.environ.get(k) for k in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    os.environ.update({"SSH_AUTH_SOCK": env["SSH_AUTH_SOCK"], "SSH_AGENT_PID": env["SSH_AGENT_PID"]})
    try:
        for key in keys:
            subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True)
        yield
    finally:
        os.kill(int(env["SSH_AGENT_PID"]), signal.SIGTERM)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
