"""The portal's pages. Thin: parse the request, call one service or selector, render; the
HTTP status of a refusal is chosen here (:func:`.common.status_for`), never in a service."""
