"""The LLM judge's client: ask a model served by Ollama (https://ollama.com) for a reply.

Chapter 7 grades its model's answers with a larger model, Llama 3 by default, that Ollama
runs on the learner's machine. The chapter writes the grading prompt and reads the score out
of the reply; this module only carries the request there and back, with the official
``ollama`` Python package:

- ``ollama_status(url, model)`` says whether a server answers at ``url`` and has ``model``;
- ``query_ollama(prompt, model, url)`` sends one user message and returns the reply text.

The ``ollama`` package is optional (the rest of the course runs without it), so it is
imported inside the functions. Every request has a timeout and goes only to the server
named: ``url`` must be an http:// or https:// address (anything else is a ValueError before
any request), and a redirect is an error, never followed (the ``ollama`` client, through
httpx, would follow it to any host). Every way a request can fail becomes one of two errors
whose message says what to do:

- ``JudgeUnavailableError``: no judge to ask (package missing, no server, the model not
  downloaded, no answer in time);
- ``JudgeReplyError``: the server answered, but not the way Ollama does.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Callable
from typing import Any

__all__ = [
    "OLLAMA_MODEL",
    "OLLAMA_URL",
    "JudgeReplyError",
    "JudgeUnavailableError",
    "ollama_help",
    "ollama_status",
    "query_ollama",
]

OLLAMA_URL = "http://localhost:11434"  # where `ollama serve` listens by default
OLLAMA_MODEL = "llama3"


class JudgeUnavailableError(RuntimeError):
    """The LLM judge (an Ollama server) cannot be reached or cannot run the model."""


class JudgeReplyError(ValueError):
    """The judge answered, but not in the expected form."""


def ollama_help(url: str = OLLAMA_URL, model: str = OLLAMA_MODEL) -> str:
    """How to start the judge, for error messages."""
    return (
        f"To score answers with an LLM judge, install Ollama (https://ollama.com), start its "
        f"server with `ollama serve`, download the judge model with `ollama pull {model}`, and "
        f"run this again. The server is expected at {url}."
    )


def _import_ollama(url: str, model: str):
    # The client package is an optional dependency: without it there is no judge.
    try:
        import ollama
    except ImportError:
        raise JudgeUnavailableError(
            "the LLM judge needs the `ollama` Python package, which is not installed: run "
            "`pip install ollama` (it is listed in requirements.txt). " + ollama_help(url, model)
        ) from None
    return ollama


def _check_timeout(timeout: float) -> None:
    if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
        raise ValueError(
            f"timeout must be a positive number of seconds, got {timeout!r}; a judge request "
            "without a time limit could hang forever"
        )


def _check_url(url: str) -> None:
    # Only an http(s) address with a host: the ollama client would otherwise take a file:// or
    # ftp:// URL, or fall back to $OLLAMA_HOST when url is empty, and send the request elsewhere.
    expected = f"expected the address of an Ollama server, such as {OLLAMA_URL}"
    if not isinstance(url, str):
        raise ValueError(f"the judge's url must be a string, got {type(url).__name__}; {expected}")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as err:
        raise ValueError(f"{url!r} is not a valid address ({err}); {expected}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// address; {expected}")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host; {expected}")


def _refuse_redirects(response) -> None:
    # httpx calls this with every response, before the client reads it. A redirect could send
    # the request, and the grade it returns, to another server than the one configured.
    if 300 <= response.status_code < 400:
        target = response.headers.get("location")
        where = f" to {target}" if target else ""
        raise JudgeUnavailableError(
            f"the server at {response.request.url} answered with a redirect (HTTP "
            f"{response.status_code}{where}); the judge follows no redirects, so that grades "
            "come only from the server you named: pass the Ollama server's own address"
        )


def _reason(err: BaseException) -> str:
    # The client replaces a refused connection by a generic ConnectionError; the original
    # error (e.g. "[Errno 111] Connection refused") is its context.
    original = err.__context__ if isinstance(err, ConnectionError) and err.__context__ else err
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def _reply_problem(err: Exception) -> str:
    # What was wrong with a reply that could not be read as Ollama's: one short line.
    errors = getattr(err, "errors", None)  # pydantic's ValidationError
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "the reply"
        return f"{where}: {first.get('msg', 'invalid')}"
    return _reason(err)


def _ask(url: str, model: str, timeout: float, path: str, what: str, request: Callable) -> Any:
    """Run ``request(client)`` against the Ollama server at ``url``; map every failure.

    ``path`` (the API endpoint) and ``what`` (what its reply should be) are for the messages.
    """
    _check_timeout(timeout)
    _check_url(url)
    ollama = _import_ollama(url, model)
    import httpx  # installed with ollama, which makes its requests with it

    try:
        client = ollama.Client(
            host=url,
            timeout=timeout,
            follow_redirects=False,  # the ollama client's default is True
            event_hooks={"response": [_refuse_redirects]},
        )
    except (ValueError, httpx.InvalidURL) as err:
        raise ValueError(
            f"{url!r} is not a valid address ({_reason(err)}); expected the address of an "
            f"Ollama server, such as {OLLAMA_URL}"
        ) from None
    try:
        with client:
            return request(client)
    except ollama.ResponseError as err:  # the server answered with an HTTP error status
        hint = f" Download the model with `ollama pull {model}`." if err.status_code == 404 else ""
        raise JudgeUnavailableError(
            f"the server at {url} answered {path} with HTTP {err.status_code}: "
            f"{str(err.error)[:200]}.{hint}"
        ) from None
    except httpx.TimeoutException:
        raise JudgeUnavailableError(
            f"no answer from an Ollama server at {url} within {timeout:g} s (timed out). The "
            "model may still be loading: try again, or allow more time with a larger timeout. "
            + ollama_help(url, model)
        ) from None
    except httpx.ProtocolError as err:  # something listens there, but it does not speak HTTP
        raise JudgeReplyError(
            f"the server at {url} does not speak HTTP properly ({_reason(err)}); is it an "
            "Ollama server?"
        ) from None
    except (ConnectionError, httpx.TransportError) as err:  # refused, unknown host, cut off
        raise JudgeUnavailableError(
            f"no answer from an Ollama server at {url} ({_reason(err)}). " + ollama_help(url, model)
        ) from None
    except json.JSONDecodeError as err:
        raise JudgeReplyError(
            f"the server at {url} sent a reply to {path} that is not JSON ({err.msg} at line "
            f"{err.lineno}, column {err.colno}); is it an Ollama server?"
        ) from None
    except (TypeError, ValueError) as err:  # JSON, but not the fields Ollama sends
        raise JudgeReplyError(
            f"the reply from {url}{path} is not {what} ({_reply_problem(err)}); is it an "
            "Ollama server?"
        ) from None


def ollama_status(
    url: str = OLLAMA_URL, model: str = OLLAMA_MODEL, timeout: float = 2.0
) -> tuple[bool, str]:
    """(ready, explanation): is an Ollama server reachable at ``url`` with ``model`` pulled?

    A redirect counts as no server (not ready). Raises ValueError when ``url`` is not an
    http(s) address: that is a mistake to fix, not a judge that is missing.
    """
    try:
        listing = _ask(
            url, model, timeout, "/api/tags", "Ollama's model list", lambda client: client.list()
        )
    except JudgeUnavailableError as err:
        return False, str(err)
    except JudgeReplyError:
        return False, (
            f"the server at {url} does not answer like Ollama (no model list at /api/tags). "
            + ollama_help(url, model)
        )
    names = [entry.model for entry in listing.models if entry.model]
    if model not in names and f"{model}:latest" not in names:
        return False, (
            f"the Ollama server at {url} is running but has no model {model!r} (it has: "
            f"{', '.join(names) or 'none'}). Download it with `ollama pull {model}`."
        )
    return True, f"the Ollama server at {url} is ready with {model!r}"


def query_ollama(
    prompt: str,
    model: str = OLLAMA_MODEL,
    url: str = OLLAMA_URL,
    timeout: float = 120.0,
    seed: int = 123,
) -> str:
    """Send one user message to Ollama's chat API (/api/chat) and return the reply text.

    Waits at most ``timeout`` seconds for each step of the request (connecting, sending,
    each read of the reply). Raises JudgeUnavailableError when there is no judge to ask (a
    redirect included), JudgeReplyError when the reply is not Ollama's, and ValueError when
    ``url`` is not an http(s) address or ``timeout`` is not a finite number of seconds.
    """

    def chat(client):
        return client.chat(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            stream=False,
            options={"seed": seed, "temperature": 0, "num_ctx": 2048},  # repeatable grades
        )

    reply = _ask(url, model, timeout, "/api/chat", "a chat reply with message.content", chat)
    content = reply.message.content
    if not isinstance(content, str):
        raise JudgeReplyError(
            f"the reply from {url}/api/chat has no message.content (the message has: "
            f"{', '.join(sorted(reply.message.model_fields_set)) or 'nothing'})"
        )
    return content
