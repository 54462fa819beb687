"""The HTTP client of the operator API (what `taskledger ctl` speaks): JSON in, JSON out,
every failure one sentence naming the scheduler's address."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tools.operator.server import OPERATOR_HEADER


class CtlError(Exception):
    """The order or question did not go through (the message is one line)."""


def read_token(path: str) -> str:
    """The token in a token file: the last field of its first line that is not blank or a
    comment (the server's token file, one line ``[NAME] TOKEN``, works here too)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    return fields[-1]
    except OSError as e:
        raise CtlError(f"cannot read the token file {path}: {e.strerror}") from None
    raise CtlError(f"the token file {path} holds no token")


class Client:
    """One scheduler's operator API at ``url`` (``http://HOST:PORT/``)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        operator: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise CtlError(f"--scheduler {url!r}: give the scheduler's URL, e.g. http://HOST:PORT/")
        self.url = url.rstrip("/")
        self.token = token
        self.operator = operator
        self.timeout = timeout

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.operator:
            headers[OPERATOR_HEADER] = self.operator
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _json(response.read(), self.url)
        except urllib.error.HTTPError as e:
            raise CtlError(self._refused(e)) from None
        except urllib.error.URLError as e:
            reason = e.reason
            why = getattr(reason, "strerror", None) or str(reason)
            raise CtlError(f"cannot reach the scheduler at {self.url}: {why}") from None
        except TimeoutError:
            raise CtlError(
                f"the scheduler at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except (ConnectionError, OSError) as e:
            raise CtlError(f"cannot reach the scheduler at {self.url}: {e}") from None

    def _refused(self, e: urllib.error.HTTPError) -> str:
        try:
            message = json.loads(e.read() or b"{}").get("error")
        except (ValueError, AttributeError):
            message = None
        if e.code == 401:
            hint = "the token was refused" if self.token else "it needs a token (--token-file)"
            return f"the scheduler at {self.url} answers HTTP 401: {hint}"
        return f"{message or e.reason} (HTTP {e.code} from {self.url})"


def _json(raw: bytes, url: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise CtlError(f"{url} did not answer JSON: is it a taskledger scheduler?") from None
    if not isinstance(data, dict):
        raise CtlError(f"{url} answered {type(data).__name__}, not a JSON object")
    return data
