"""``make demo``: a local multi-region CDN on loopback. Not part of the runtime package."""
