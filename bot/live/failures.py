"""Why a Gemini Live connection failed, in plain English, and whether trying again could help.

Pure functions over the exception (or close code) and the two settings a reason may name: the API key,
only so it can be scrubbed out, and the model. `LiveSession` decides what to do with the `Verdict`.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass

from google.genai import errors as genai_errors
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bot.config import Settings

PERMANENT_CLOSE_CODES = frozenset({1007, 1008})  # bad key, model or request: the same setup fails again


@dataclass(frozen=True, slots=True)
class Verdict:
    """A reason safe to show an operator, and whether it is permanent (retrying cannot help)."""

    reason: str
    permanent: bool
    code: int | None = None


def classify(exc: BaseException, *, api_key: str, model: str) -> Verdict:
    """Plain-English reason for `exc`, and whether trying again could help."""
    if isinstance(exc, genai_errors.APIError):
        return classify_code(exc.code, f"{exc.status or ''} {exc.message or ''} {exc.details or ''}",
                             api_key=api_key, model=model)
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 404:
            return Verdict("The Gemini Live endpoint was not found (HTTP 404): check GEMINI_BASE_URL and "
                           "GEMINI_API_VERSION (the Live API is served on v1beta).", True, status)
        return classify_code(status, "", api_key=api_key, model=model)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Verdict("Could not verify the Gemini server's TLS certificate: check SSL_CERT_FILE and "
                       "GEMINI_BASE_URL.", True)
    if isinstance(exc, ConnectionClosed):  # raised raw by send_* after the close
        if exc.rcvd is not None:
            return classify_code(exc.rcvd.code, exc.rcvd.reason, api_key=api_key, model=model)
        return Verdict("the connection to Gemini dropped", False, 1006)
    if isinstance(exc, TypeError):  # the SDK's reaction to a frame with only unknown keys
        return Verdict("Gemini sent a message this version of the SDK cannot read", False)
    if isinstance(exc, TimeoutError):
        return Verdict("timed out connecting to Gemini", False)
    if isinstance(exc, socket.gaierror):
        return Verdict("this machine could not look up Gemini's address — is it online?", False)
    if isinstance(exc, OSError):
        return Verdict("this machine could not reach Gemini over the network — is it online?", False)
    return Verdict(f"unexpected problem talking to Gemini ({type(exc).__name__})", False)


def classify_for(settings: Settings, exc: BaseException) -> Verdict:
    """`classify` with the key (to scrub) and the model (to name) from `settings`."""
    return classify(exc, api_key=settings.gemini_api_key.get_secret_value(), model=settings.gemini_model)


def classify_code(code: int | None, text: str, *, api_key: str, model: str) -> Verdict:
    """Verdict for an HTTP status or WebSocket close code plus the server's (untrusted) text."""
    detail = " ".join(scrub(text, api_key).split())[:200]
    lowered = detail.lower()
    if "api key" in lowered or "api_key" in lowered or code in (401, 403):
        return Verdict("Gemini rejected the API key: check GEMINI_API_KEY (copy it again from Google AI "
                       "Studio).", True, code)
    if "quota" in lowered or "resource_exhausted" in lowered or code == 429:
        return Verdict("The Gemini API quota is exceeded for this key: wait a while or check the plan and "
                       "limits in Google AI Studio.", True, code)
    # ("…is not supported for this model" is a refused setup field, not an unknown model: the model was found.)
    if code == 404 or ("model" in lowered and "not found" in lowered):
        return Verdict(f"The Gemini model “{model}” was not found or does not support "
                       "the Live API: check GEMINI_MODEL.", True, code)
    if code in PERMANENT_CLOSE_CODES or (code is not None and 400 <= code < 500):
        return Verdict(f"Gemini refused the session (code {code}: {detail or 'no details'}).", True, code)
    return Verdict(f"the connection to Gemini closed (code {code}: {detail or 'no details'})", False, code)


def is_auth_problem(verdict: Verdict) -> bool:
    """A key or quota problem: forgetting the resumption handle would not fix it."""
    return "API key" in verdict.reason or "quota" in verdict.reason


def scrub(text: str, api_key: str) -> str:
    """`text` without the API key, whether verbatim or as a `key=` query parameter."""
    text = text.replace(api_key, "***") if api_key else text
    return re.sub(r"([?&]key=)[^&\s]+", r"\1***", text)
