"""SSH signatures, as git uses them: sign with `ssh-keygen -Y sign` (a key file or the SSH agent),
verify with the `sshsig` library (SSHSIG format, namespaces), read OpenSSH allowed_signers files.

Verification never shells out, so the sensor and the ops check signatures in-process; signing
needs `ssh-keygen` (OpenSSH 8.1+) because it is what reads passphrase-protected keys and talks
to the agent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import sshsig
from sshsig.allowed_signers import AllowedSigner

from release_pipelines.core.errors import ManifestError, Problem, ReleaseError
from release_pipelines.core.manifest import Manifest, SignedBy
from release_pipelines.core.statements import key_fingerprint

_SIGN_TIMEOUT = 120  # seconds: a passphrase prompt or an agent confirmation waits for a person


class SignatureError(ReleaseError):
    """A signature could not be made, or does not verify; the message says why."""


def sign(message: str, namespace: str, key: Path | None = None) -> str:
    """The armored SSHSIG signature of `message` by `key` (a private key file, or a .pub whose
    private half is in the agent); None: the SSH agent's first key."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise SignatureError("ssh-keygen is not installed; install OpenSSH (8.1 or newer) to sign approvals")
    with tempfile.TemporaryDirectory(prefix="release-sign-") as tmp:
        key_file = Path(key).expanduser() if key is not None else _agent_key(Path(tmp))
        if not key_file.is_file():
            raise SignatureError(f"no key file {key_file}; give --key PATH (e.g. ~/.ssh/id_ed25519)")
        try:
            done = subprocess.run([keygen, "-Y", "sign", "-n", namespace, "-f", str(key_file)],
                                  input=message.encode(), capture_output=True, timeout=_SIGN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise SignatureError(f"ssh-keygen did not sign within {_SIGN_TIMEOUT} s (waiting for a passphrase?)") from None
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise SignatureError(f"ssh-keygen could not sign with {key_file}: {reason[-1] if reason else 'no output'}")
    return done.stdout.decode()


def _agent_key(tmp: Path) -> Path:
    """The agent's first public key, written where ssh-keygen -Y sign -f can read it."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        raise SignatureError("no SSH agent (SSH_AUTH_SOCK is not set); give --key ~/.ssh/id_ed25519")
    listed = subprocess.run(["ssh-add", "-L"], capture_output=True, timeout=10, check=False)
    keys = [line for line in listed.stdout.decode().splitlines() if line.strip()]
    if listed.returncode != 0 or not keys:
        raise SignatureError("the SSH agent holds no key (ssh-add -L); add one with ssh-add, or give --key PATH")
    path = tmp / "agent_key.pub"
    path.write_text(keys[0] + "\n")
    return path


def signing_key(message: str, signature: str, namespace: str) -> str:
    """The OpenSSH public key whose valid signature over `message` in `namespace` this is;
    SignatureError when it is not one (wrong message, namespace, or malformed)."""
    try:
        key = sshsig.check_signature(message.encode(), signature, namespace=namespace)
    except sshsig.InvalidSignature as exc:
        raise SignatureError(str(exc) or "the signature does not match the statement") from None
    except NotImplementedError as exc:
        raise SignatureError(f"unsupported signature ({exc}); sign with an ed25519 or RSA key") from None
    except ValueError as exc:
        raise SignatureError(f"malformed signature ({exc})") from None
    return key.openssh_str()


def read_allowed_signers(path: Path, namespace: str) -> dict[str, list[str]]:
    """principal -> keys from an OpenSSH allowed_signers file (lines whose `namespaces=` option,
    when present, includes `namespace`). Certificate authorities and principal patterns are refused:
    a rule names its approvers."""
    signers: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entry = AllowedSigner.parse(line.strip())
        except (ValueError, IndexError) as exc:
            raise ValueError(f"line {number}: not an allowed_signers line ({exc})") from None
        options = entry.options or {}
        if "cert-authority" in options:
            raise ValueError(f"line {number}: cert-authority is not supported; list each approver's key")
        if "namespaces" in options and namespace not in options["namespaces"].split(","):
            continue
        key = f"{entry.key_type} {entry.base64_key}"
        checked_key(key, f"line {number}")
        for principal in entry.principals.split(","):
            if any(c in principal for c in "*?!"):
                raise ValueError(f"line {number}: principal pattern {principal!r}; name each approver")
            signers.setdefault(principal, []).append(key)
    return signers


def checked_key(key: str, where: str) -> None:
    """A public key sshsig can verify with, or ValueError naming `where`."""
    try:
        sshsig.PublicKey.from_openssh_str(key)
    except NotImplementedError:
        raise ValueError(f"{where}: {key.split()[0]} keys cannot verify signatures here; use ed25519 or RSA") from None
    except ValueError:
        raise ValueError(f"{where}: {key[:40]!r} is not a valid OpenSSH public key") from None


def with_signer_keys(manifest: Manifest, manifest_path: Path, namespace: str) -> Manifest:
    """The manifest with each rule's `signers` file (approvals, `requests`, `promote_into`) read into
    {principal: keys}; every file or key problem is a ManifestError naming the field and the file."""
    problems: list[Problem] = []

    def loaded(rule: SignedBy, field: str) -> SignedBy:
        if rule.signers is None:
            return rule
        if isinstance(rule.signers, dict):
            for principal, keys in rule.signer_keys().items():
                for key in keys:
                    try:
                        checked_key(key, f"signers.{principal}")
                    except ValueError as exc:
                        problems.append(Problem(field, str(exc), str(manifest_path)))
            return rule
        path = Path(os.path.normpath(manifest_path.parent / Path(rule.signers).expanduser()))
        try:
            return rule.model_copy(update={"signers": read_allowed_signers(path, namespace)})
        except OSError as exc:
            problems.append(Problem(f"{field}.signers", f"cannot read allowed signers file {path}: "
                                    f"{exc.strerror}", str(manifest_path)))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(Problem(f"{field}.signers", f"{path}: {exc}", str(manifest_path)))
        return rule

    update: dict = {"approvals": [loaded(r, f"approvals[{i}]") for i, r in enumerate(manifest.approvals)]}
    if manifest.requests is not None:
        update["requests"] = loaded(manifest.requests, "requests")
    environments = []
    for e, env in enumerate(manifest.environments):
        changes: dict = {}
        if env.approvals is not None:
            changes["approvals"] = [loaded(r, f"environments[{e}].approvals[{i}]") for i, r in enumerate(env.approvals)]
        if env.promote_into is not None:
            changes["promote_into"] = loaded(env.promote_into, f"environments[{e}].promote_into")
        environments.append(env.model_copy(update=changes))
    update["environments"] = environments
    if problems:
        raise ManifestError(problems)
    return manifest.model_copy(update=update)


def describe_key(key: str) -> str:
    """`ssh-ed25519 SHA256:...`: how a key is shown to people."""
    return f"{key.split()[0]} {key_fingerprint(key)}"
