"""Tessera on an autoscaling Ray cluster: the node groups (``nodes.py``, the one declaration
that both the KubeRay manifest and the simulated cluster read) and ``tessera cluster
up/down/status/kill-node`` (``sim.py``, ``commands.py``), which run that cluster on one
machine with Ray's ``fake_multinode`` provider."""
