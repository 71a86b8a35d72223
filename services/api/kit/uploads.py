"""One file of a multipart/form-data body, as its bytes arrive: nothing is spooled to memory or disk.

FastAPI's `UploadFile` reads the whole body into a temporary file before the route runs; a route that reads
as it goes takes the file from here instead (its size is bounded by `gate.Gate` meanwhile).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from services.api.kit.envelope import ApiError, invalid

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # a TypedDict for type checkers only


def upload_doc(field: str) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads `field` itself (as `UploadFile` would document it)."""
    schema = {
        "type": "object",
        "required": [field],
        "properties": {field: {"type": "string", "contentMediaType": "application/octet-stream"}},
    }
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


class _Part:
    """Collects the data of the first part named `field` while the parser walks the body."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.found = self.done = False
        self.data: list[bytes] = []
        self._reading = False
        self._header = b""
        self._value = b""
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._disposition = b""
        self._reading = not self.found and options.get(b"name") == self.field.encode()
        self.found = self.found or self._reading

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._reading:
            self.data.append(data[start:end])

    def _on_part_end(self) -> None:
        self.done = self.done or self._reading
        self._reading = False


async def file_chunks(request: Request, field: str) -> AsyncIterator[bytes]:
    """The bytes of the part named `field`, chunk by chunk as the network delivers them; the rest of the
    body after it is not read. 422 when the body is not multipart or has no such part, 400 when it is not
    well-formed."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise invalid(f"upload the file as multipart/form-data, in a part named `{field}`", ["body", field])
    if not options.get(b"boundary"):
        raise ApiError(400, "bad_request", "the multipart/form-data body names no boundary")
    part = _Part(field)
    try:
        parser = MultipartParser(options[b"boundary"], part.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
            if part.data:
                yield b"".join(part.data)
                part.data.clear()
            if part.done:
                return
        parser.finalize()
    except FormParserError as error:
        raise ApiError(400, "bad_request", f"the body is not valid multipart/form-data: {error}") from error
    except ClientDisconnect as error:  # nobody hears the answer; it only keeps the log free of a crash
        raise ApiError(400, "bad_request", "the client went away during the upload") from error
    if not part.found:
        raise invalid(f"the upload has no part named `{field}`", ["body", field])
    raise ApiError(400, "bad_request", f"the body ends inside the `{field}` part")
