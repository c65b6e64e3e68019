"""TLS for the public listeners of the edge and the router: one place for the settings rules and the context."""

from __future__ import annotations

import ssl
from pathlib import Path


def check_tls_pair(cert: Path | None, key: Path | None) -> None:
    """Both or neither, and readable files: raises ValueError naming the fields."""
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key: set both or neither")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ValueError(f"tls_cert/tls_key: {path} is not a readable file")


def server_ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server context (TLS 1.2 and later) for a certificate chain and key, or None for plain HTTP."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
