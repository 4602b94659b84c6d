"""The HTTP API: the FastAPI app and its lifespan, the request gate (auth before any body is read), strict
JSON bodies, dependencies, one router per resource, the live event stream, and the views that shape rows
into response models. Routes stay thin: they validate, call the scheduling core or the store, and answer."""
