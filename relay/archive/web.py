"""The archive's routes on the admin listener: its files (with Range, so players seek) and `relay fetch`'s call."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from relay.archive.service import ArchiveService
from relay.errors import RelayError
from relay.escaping import JSONResponse


def routes(archive: ArchiveService) -> list[Route]:
    """`GET /files/<task>/<name>` and `POST /api/fetch?task=ID`."""

    async def archived_file(request: Request) -> Response:
        path = archive.local_file(request.path_params["folder"], request.path_params["name"])
        if path is None:
            raise HTTPException(404, "no such archived file")
        return FileResponse(path)  # answers Range requests

    async def fetch(request: Request) -> Response:
        try:
            counts = await archive.fetch(request.query_params.get("task") or None)
        except RelayError as exc:
            raise HTTPException(409, str(exc)) from None
        return JSONResponse(counts)

    return [Route("/files/{folder}/{name}", archived_file), Route("/api/fetch", fetch, methods=["POST"])]
