"""Our own HTTP/1.1 server front end (DESIGN.md §2): parser callbacks collect a request head, the
connection cycle (keep-alive, pipelining, limits, timeouts) is kept apart from the request cycle,
flow control is explicit, and a response that is known in advance costs one write."""
