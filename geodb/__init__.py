"""Demo geolocation data for edgecache: ``source.csv`` and the builder that compiles it to ``.mmdb``."""
