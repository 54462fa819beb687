"""Secrets read from files, never from the command line: `taskledger run`'s --secret-file
and --password-file, and the read commands' --password-file (a log of record's password)."""

from __future__ import annotations

import os


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message names the file and why."""


def read_secret(path: str) -> str:
    """The secret in a file (one line; a trailing newline is not part of it)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
    except OSError as e:
        raise SecretFileError(f"cannot read the secret file {path}: {e.strerror}") from None
    secret = raw.rstrip(b"\r\n")
    if not secret or len(raw) > 4096 or b"\n" in secret:
        raise SecretFileError(f"the secret file {path} must hold one line (the secret)")
    try:
        return secret.decode("ascii")
    except UnicodeDecodeError:
        # pymesos encodes "principal:secret" as ASCII for HTTP basic authentication.
        raise SecretFileError(
            f"the secret in {path} is not ASCII (pymesos cannot send it)"
        ) from None


def postgres_password(password_file: str | None) -> str:
    """A log of record's PostgreSQL password: the --password-file's line, else $PGPASSWORD."""
    if password_file:
        return read_secret(password_file)
    return os.environ.get("PGPASSWORD", "")
