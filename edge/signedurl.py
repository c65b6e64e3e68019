"""Signed URLs: a link that works until it expires, for one path (and optionally one client).

    token = base64url(HMAC-SHA256(secret, "<path>\\n<expires>[\\n<client address>]")), unpadded

``sign_url`` mints one (``python -m edge.signedurl --secret S --expires-in 3600 https://cdn/x``
does it from a shell); ``check`` verifies one in constant time.  The edge drops the two
parameters from the cache key, so every holder of a valid link shares one object.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

from edge.version import add_version_flag

__all__ = ["check", "sign_url", "signature"]


def signature(secret: str, path: str, expires: int, client: str | None = None) -> str:
    message = f"{path}\n{expires}" + (f"\n{client}" if client is not None else "")
    digest = hmac.new(secret.encode(), message.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_url(
    url: str, secret: str, expires: int, *, client: str | None = None, param: str = "token",
    expires_param: str = "expires",
) -> str:  # fmt: skip
    """``url`` with ``expires_param`` and ``param`` appended (``expires``: a Unix time)."""
    parts = urlsplit(url)
    token = signature(secret, parts.path or "/", expires, client)
    extra = urlencode([(expires_param, str(expires)), (param, token)])
    query = f"{parts.query}&{extra}" if parts.query else extra
    return parts._replace(query=query).geturl()


def check(
    secret: str, path: str, query: str, *, param: str, expires_param: str, client: str | None,
    now: float | None = None,
) -> str | None:  # fmt: skip
    """None when the query carries a valid, unexpired signature of ``path``; else why not."""
    token = expires = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == param:
            token = value
        elif name == expires_param:
            expires = value
    if token is None or expires is None:
        return "missing signature"
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return "malformed expiry"
    if int(expires) < (time.time() if now is None else now):
        return "link expired"
    expected = signature(secret, path, int(expires), client)
    if not hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
        return "bad signature"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge.signedurl", description="Mint a signed URL.")
    add_version_flag(parser, "python -m edge.signedurl")
    parser.add_argument("url")
    parser.add_argument("--secret", required=True, help="the site's signed_urls.secret")
    parser.add_argument("--expires-in", type=int, default=3600, help="seconds from now (default 3600)")
    parser.add_argument("--client", help="bind to this client address (signed_urls.bind_client)")
    parser.add_argument("--param", default="token")
    parser.add_argument("--expires-param", default="expires")
    args = parser.parse_args(argv)
    expires = int(time.time()) + args.expires_in
    print(sign_url(args.url, args.secret, expires, client=args.client, param=args.param,
                   expires_param=args.expires_param))  # fmt: skip


if __name__ == "__main__":
    main()
