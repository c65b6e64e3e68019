"""edgecache origin stub: a scriptable HTTP origin for tests, the demo and benchmarks."""

from .app import OriginStubServer, create_origin_app
from .body import body_chunks, expected_body

__all__ = ["OriginStubServer", "body_chunks", "create_origin_app", "expected_body"]
