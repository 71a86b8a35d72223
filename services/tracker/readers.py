"""Inbound mail is read in reader processes, never on the event loop that serves the pixel.

Parsing one hostile mail took seconds of CPU (a hundred thousand parts, flufl.bounce's heuristics over a big
attachment), and on the loop that stalled every open hit meanwhile. So each mail is a job for a
`shared.workers` pool of reader processes (`python -m services.tracker.readers`), started when first needed:
one mail at a time each, under an address-space limit, at a lower CPU priority than the tracker, killed and
replaced when still busy at the deadline. The raw bytes go to a reader; only a small `Reading` comes back, as
JSON (nothing it sends is unpickled). Here a reader's failure is the mail's OverLimit.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from pydantic import TypeAdapter

from services.tracker.inbound import Limits, NotUnderstood, OverLimit, Reading, read_mail
from shared import workers
from shared.settings import Settings

log = structlog.get_logger()

RECIPIENT = struct.Struct(">I")  # size of the envelope recipient that comes before the raw mail in a request
MAX_ANSWER = 1024 * 1024  # a Reading is a few kilobytes


def limits_of(settings: Settings) -> Limits:
    return Limits(
        parts=settings.inbound_max_parts,
        depth=settings.inbound_max_depth,
        header_lines=settings.inbound_max_header_lines,
        header_bytes=settings.inbound_max_header_bytes,
    )


@dataclass(frozen=True)
class Answer:
    """A reader's answer to one mail: its reading, or why there is none."""

    reading: Reading | None = None
    refused: str = ""
    over_limit: bool = False
    unexpected: bool = False  # the reading code raised: a bug to fix, though the mail is still refused


ANSWER = TypeAdapter(Answer)


class MailReaders:
    """At most `inbound_readers` reader processes, started when needed and kept while the tracker runs.

    Mails wait their turn for a reader, at most `inbound_backlog` of them (beyond, `WorkersUnavailable`);
    the deadline `inbound_read_seconds` counts from the moment a reader takes the mail. Use as `async with`:
    on the way out, every reader is ended."""

    def __init__(self, settings: Settings) -> None:
        self._seconds = settings.inbound_read_seconds
        self._memory_mb = settings.inbound_reader_memory_mb
        config = {"limits": asdict(limits_of(settings)), "memory_mb": self._memory_mb}
        self._readers = workers.WorkerPool(
            "mail_reader",
            __name__,
            config,
            workers=settings.inbound_readers,
            seconds=self._seconds,
            memory_mb=self._memory_mb,
            answer_max_bytes=MAX_ANSWER,
            backlog=settings.inbound_backlog,
        )

    async def __aenter__(self) -> MailReaders:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._readers.stop()

    async def read(self, raw: bytes, envelope_recipient: str | None, *, waits: bool = False) -> Reading:
        """Raises NotUnderstood; OverLimit for a mail over a limit, the deadline or a reader's memory.
        `waits`: the caller bounds the mails it holds; the mail waits for a reader (`WorkerPool.call`)."""
        recipient = (envelope_recipient or "").encode("utf-8", "replace")
        try:
            answer = await self._readers.call(
                RECIPIENT.pack(len(recipient)) + recipient + raw, ANSWER.validate_json, waits=waits
            )
        except workers.JobOverran:
            raise OverLimit(f"reading it took longer than {self._seconds:g} s") from None
        except workers.WorkerFailed:  # it died: over its memory limit, most likely
            raise OverLimit(f"its reader stopped (a reader has {self._memory_mb} MB)") from None
        if answer.reading is None:
            if answer.unexpected:
                log.warning("tracker.inbound.read_failed", reason=answer.refused)
            raise (OverLimit if answer.over_limit else NotUnderstood)(answer.refused)
        return answer.reading


def handler(config: dict[str, Any]) -> workers.Handler:
    """A reader's answer to each request, under the limits in `config`."""
    limits, memory_mb = Limits(**config["limits"]), int(config["memory_mb"])
    # flufl.bounce logs a traceback whenever one of its detectors trips over a mail; the mail is refused with
    # the reason, so the log needs no traceback per hostile mail.
    logging.getLogger("flufl.bounce").disabled = True

    def handle(request: bytes) -> bytes:
        (size,) = RECIPIENT.unpack_from(request)
        envelope_recipient = request[RECIPIENT.size : RECIPIENT.size + size].decode("utf-8", "replace")
        raw = request[RECIPIENT.size + size :]
        return ANSWER.dump_json(_answer(raw, envelope_recipient or None, limits, memory_mb))

    return handle


def _answer(raw: bytes, envelope_recipient: str | None, limits: Limits, memory_mb: int) -> Answer:
    try:
        return Answer(reading=read_mail(raw, envelope_recipient, limits))
    except OverLimit as error:
        return Answer(refused=str(error), over_limit=True)
    except NotUnderstood as error:
        return Answer(refused=str(error))
    except MemoryError:
        return Answer(refused=f"reading it needs more than a reader's {memory_mb} MB", over_limit=True)
    except Exception as error:  # refused all the same: a 422 for the sender, a warning for us
        return Answer(refused=f"it could not be read ({type(error).__name__})", unexpected=True)


if __name__ == "__main__":
    workers.serve(handler)
