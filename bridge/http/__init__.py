"""``sa3 serve --http [HOST:]PORT``: the HTTP contract that existing Stable Audio 3 DAW front ends
speak (gary4juce's SA3 tab, the Ableton Live extension), over the same job engine as the ZeroMQ
daemon. docs/http.md is its reference; ../shared/http-contract.md the contract it follows.

The server is waitress (pure Python, no dependencies of its own, maintained by the Pylons
project): a thread pool answers requests, so ``/health`` and polls answer while a job runs; it
buffers large request bodies to disk instead of memory, and refuses bodies over
``server.MAX_BODY_BYTES`` (256 MiB) before reading them.
"""

from __future__ import annotations

# The server itself is bridge.http.server.HttpServer; this module stays light, so that building
# the command line does not import the model stack.
DEFAULT_PORT = 8006  # the port the clients call
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
