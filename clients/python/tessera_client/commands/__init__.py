"""The client commands of the ``tessera`` CLI, one module per command, each exposing
``add_arguments(parser)`` and ``run(args) -> int`` (routed by ``tessera.cli``).

Exit codes (see :mod:`tessera_client.commands._common`): 0 ok, 1 other error, 2 usage or
invalid request, 3 not found, 4 rate limited / unavailable / timed out after retries,
5 job failed or cancelled.
"""
