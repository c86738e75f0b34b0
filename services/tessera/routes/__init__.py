"""The text-to-image routes, written against model-service handles.

``schemas``: the request models every entry point validates with (HTTP, gRPC, jobs);
``pipelines``: the routes (``Pipelines``); ``handles``: one handle per registered model
service; ``local``: in-process stand-ins for the handles. The gateway and the job worker
both run these routes; neither imports the other.
"""
