"""The public-context store (versioned, double-buffered, one writer per key).

Empty until the pipelined modes land: the sequential mode keeps each request's context private.
"""
