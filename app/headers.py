"""Security headers on every answer (issue 14): what a browser may do with our pages.

    Content-Security-Policy  scripts only from this origin (no inline script, no eval), no
                             plugins, no <base> rewriting, no framing (clickjacking), forms and
                             fetches to this origin only. Styles allow 'unsafe-inline': Plotly
                             sets style attributes and injects <style> elements as it draws,
                             and Swagger UI does the same; images allow data: (their icons).
    X-Content-Type-Options   nosniff: a file is run only as the type it is served as
    Referrer-Policy          no-referrer: dashboard URLs (filters, names) leave with no link
    X-Frame-Options          DENY, for browsers older than frame-ancestors

app/edge.py's EdgeMiddleware adds them to every answer that does not set them itself.
"""

from __future__ import annotations

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

# As ASGI sends them: lower-case latin-1 names and values, in HEADERS' order.
RAW_HEADERS = tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in HEADERS.items())
