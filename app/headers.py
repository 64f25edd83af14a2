"""Security headers on every answer (issue 14): what a browser may do with our pages.

    Content-Security-Policy  scripts only from this origin (no inline script, no eval), no
                             plugins, no <base> rewriting, no framing (clickjacking), forms and
                             fetches to this origin only. Styles allow 'unsafe-inline': Plotly
                             sets style attributes and injects <style> elements as it draws,
                             and Swagger UI does the same; images allow data: (their icons).
    X-Content-Type-Options   nosniff: a file is run only as the type it is served as
    Referrer-Policy          no-referrer: dashboard URLs (filters, names) leave with no link
    X-Frame-Options          DENY, for browsers older than frame-ancestors

A pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streamed CSV answers).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
