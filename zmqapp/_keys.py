"""CURVE certificate files, written so that nothing else can be made to receive a key.

``zmqapp keygen`` writes ``NAME.key`` (public, mode 0644) and ``NAME.key_secret`` (secret,
mode 0600) in the text format ``zmq.auth.load_certificate`` reads. Each file is written to a
fresh temporary file in the same directory, opened with ``O_EXCL | O_NOFOLLOW`` and given its
mode with ``fchmod`` (so the umask does not matter), then renamed over the final name: a
rename replaces a symbolic link there, never the file the link points to.
"""

from __future__ import annotations

import datetime
import os
import secrets

import zmq

#: Modes of the two files, whatever the umask.
PUBLIC_MODE = 0o644
SECRET_MODE = 0o600


class CertificateError(Exception):
    """The certificates could not be written; the message says why and what to do."""


def write_certificates(
    directory: str | os.PathLike[str], name: str, *, force: bool = False
) -> tuple[str, str, bytes]:
    """Make a CURVE key pair and write it as ``name.key`` and ``name.key_secret``.

    Returns the two paths and the public key (Z85). Without ``force``, an existing file (or
    link, even a dangling one) of either name is an error; with it, the names are replaced.
    Raises :class:`CertificateError` with a sentence.
    """
    folder = os.fspath(directory)
    if not name or os.path.sep in name or (os.path.altsep and os.path.altsep in name):
        raise CertificateError(f"--name {name!r} must be a file name, not a path.")
    public_file = os.path.join(folder, f"{name}.key")
    secret_file = os.path.join(folder, f"{name}.key_secret")
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise CertificateError(
            f"Could not create the directory {folder}: {exc.strerror or exc}. Choose a "
            "directory you can write to, or remove what is in the way."
        ) from None
    if not force:
        for path in (public_file, secret_file):
            if os.path.lexists(path):
                raise CertificateError(
                    f"{path} already exists; pass --force to replace it (peers holding the "
                    "old public key will then be refused), or choose another --name."
                )
    public, secret = zmq.curve_keypair()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    for path, text, mode in (
        (secret_file, _certificate(public, secret, stamp), SECRET_MODE),
        (public_file, _certificate(public, None, stamp), PUBLIC_MODE),
    ):
        try:
            _replace(path, text, mode)
        except OSError as exc:
            raise CertificateError(
                f"Could not write {path}: {exc.strerror or exc}. Choose a directory you can "
                "write to, or remove what is in the way."
            ) from None
    return public_file, secret_file, public


def _certificate(public: bytes, secret: bytes | None, stamp: str) -> str:
    kind = "secret" if secret is not None else "public"
    lines = [
        f"#   ZeroMQ CURVE {kind} certificate, made by zmqapp keygen on {stamp}.",
        "#   Keep it private: whoever holds it can act as its owner."
        if secret is not None
        else "#   Give it to the peers that must recognise its owner.",
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _replace(path: str, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` with ``mode``, atomically, never following a link."""
    folder = os.path.dirname(path) or "."
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temporary, flags, SECRET_MODE)
    try:
        os.fchmod(fd, mode)  # before any byte is written, and whatever the umask
        with os.fdopen(fd, "w", encoding="ascii") as f:
            fd = -1  # the file object owns it now
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
