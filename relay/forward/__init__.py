"""Handing results on: `[[forward]]` targets (HTTP with Standard Webhooks signatures, or a command), and replay.

`filters` says which deliveries a target wants, `signing` signs a request, `http` and `command` make one attempt,
`kind` is the `forwards` job kind of the durable queue, `service` is what the admin API and page call (replay,
per-task results), `web` their routes.
"""
