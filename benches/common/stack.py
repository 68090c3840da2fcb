"""Shared by the Python benchmarks: the repository, the local stack's env file, free ports."""
import os
import socket

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(l.strip().split("=", 1) for l in open(os.environ.get(
    "ALERTPIPE_STACK_ENV", os.path.join(REPO, ".state/stack.env"))) if "=" in l and not l.startswith("#"))


def port():
    """A free TCP port on 127.0.0.1."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p
