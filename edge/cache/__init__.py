"""The cache driver (DESIGN.md §2): the request path from lookup verdict to response, read top to bottom.

``driver`` takes a request from the front end and reads like the path it describes::

    fast path (``hit``) → look up (``lookup``: a closed verdict) → serve (``respond``)
                                                               | fill (``fill``, shared by ``coalesce``)
                                                               | revalidate (``revalidate``)

Every RFC 9111 decision is made by the pure rules in ``edge.http``; these modules only move bytes
between the client, the tiers (``edge.store``) and the origin (``edge.upstream``).
"""
