"""Inbound mail is read in reader processes, never on the event loop that serves the pixel.

Parsing one hostile mail took seconds of CPU (a hundred thousand parts, flufl.bounce's heuristics over a big
attachment), and on the loop that stalled every open hit meanwhile. Each mail now goes to one of a few reader
processes with a deadline: a reader still busy at the deadline is killed, and a new one is started when next
needed. A reader is a fresh interpreter (`python -m services.tracker.readers`: nothing is forked from a
process that runs an event loop) with a lower CPU priority than the tracker and an address-space limit. The
raw bytes go to it over its stdin; only a small `Reading` comes back, as JSON (nothing it sends is unpickled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import struct
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import structlog
from pydantic import TypeAdapter

from services.tracker.inbound import Limits, NotUnderstood, OverLimit, Reading, read_mail
from shared.settings import Settings

log = structlog.get_logger()

ROOT = Path(__file__).resolve().parents[2]  # where `python -m services…` finds the code
NICENESS = 10  # above the tracker's: the pixel and PostgreSQL come first, a reader gets the CPU they leave
READY = b"maildash-reader-ready\n"
REQUEST = struct.Struct(">II")  # sizes of the envelope recipient and of the raw mail that follow
ANSWER_SIZE = struct.Struct(">I")
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


@dataclass(eq=False)
class _Reader:
    process: asyncio.subprocess.Process
    requests: asyncio.StreamWriter  # its stdin
    answers: asyncio.StreamReader  # its stdout

    async def ask(self, raw: bytes, envelope_recipient: str | None) -> Answer:
        recipient = (envelope_recipient or "").encode("utf-8", "replace")
        self.requests.write(REQUEST.pack(len(recipient), len(raw)) + recipient)
        self.requests.write(raw)
        await self.requests.drain()
        (size,) = ANSWER_SIZE.unpack(await self.answers.readexactly(ANSWER_SIZE.size))
        if size > MAX_ANSWER:
            raise ValueError(f"an answer of {size} bytes")
        return ANSWER.validate_json(await self.answers.readexactly(size))


class MailReaders:
    """At most `inbound_readers` reader processes, started when needed and kept while the tracker runs.

    Mails wait their turn for a reader; the deadline `inbound_read_seconds` counts from the moment a reader
    takes the mail. Use as `async with`: on the way out, every reader is ended."""

    def __init__(self, settings: Settings) -> None:
        self._limits = limits_of(settings)
        self._seconds = settings.inbound_read_seconds
        self._memory_mb = settings.inbound_reader_memory_mb
        self._turns = asyncio.Semaphore(settings.inbound_readers)
        self._idle: list[_Reader] = []
        self._readers: set[_Reader] = set()  # idle or busy, until ended

    async def __aenter__(self) -> MailReaders:
        return self

    async def __aexit__(self, *_: object) -> None:
        for reader in list(self._readers):
            await self._end(reader)

    async def read(self, raw: bytes, envelope_recipient: str | None) -> Reading:
        """Raises NotUnderstood; OverLimit for a mail over a limit, the deadline or a reader's memory."""
        async with self._turns:
            reader = await self._reader()
            try:
                answer = await asyncio.wait_for(reader.ask(raw, envelope_recipient), self._seconds)
            except TimeoutError:
                await self._end(reader)
                log.warning("tracker.inbound.reader_killed", seconds=self._seconds, size=len(raw))
                raise OverLimit(f"reading it took longer than {self._seconds:g} s") from None
            except (EOFError, OSError, ValueError) as error:  # it died: over its memory limit, most likely
                await self._end(reader)
                log.warning("tracker.inbound.reader_died", error=repr(error), size=len(raw))
                raise OverLimit(f"its reader stopped (a reader has {self._memory_mb} MB)") from None
            except BaseException:  # cancelled mid-mail: its answer must never reach the next one
                await self._end(reader)
                raise
            self._idle.append(reader)
        if answer.reading is None:
            if answer.unexpected:
                log.warning("tracker.inbound.read_failed", reason=answer.refused)
            raise (OverLimit if answer.over_limit else NotUnderstood)(answer.refused)
        return answer.reading

    async def _reader(self) -> _Reader:
        while self._idle:
            reader = self._idle.pop()
            if reader.process.returncode is None:
                return reader
            await self._end(reader)  # it died while idle
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            json.dumps(asdict(self._limits)),
            str(self._memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        reader = _Reader(process, process.stdin, process.stdout)
        self._readers.add(reader)
        try:
            # At once, before its interpreter has imported much: the tracker's CPU first, from the start.
            os.setpriority(os.PRIO_PROCESS, process.pid, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)
            if await reader.answers.readexactly(len(READY)) != READY:
                raise RuntimeError("a mail reader process answered garbage at its start")
        except BaseException:
            await self._end(reader)
            raise
        log.info("tracker.inbound.reader_started", pid=process.pid)
        return reader

    async def _end(self, reader: _Reader) -> None:
        self._readers.discard(reader)
        with contextlib.suppress(ProcessLookupError):  # it has exited already
            reader.process.kill()
        reader.requests.close()
        await reader.process.wait()


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


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(argv: list[str]) -> None:
    """A reader process: answers one mail after another until the tracker closes its stdin."""
    limits, memory_mb = Limits(**json.loads(argv[0])), int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the tracker, which then ends its readers
    # flufl.bounce logs a traceback whenever one of its detectors trips over a mail; the mail is refused with
    # the reason, so the log needs no traceback per hostile mail.
    logging.getLogger("flufl.bounce").disabled = True
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, memory_mb * 1024 * 1024))
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything else printed goes to the log, not an answer
    requests = sys.stdin.buffer
    answers.write(READY)
    answers.flush()
    while (header := _read_exactly(requests, REQUEST.size)) is not None:
        recipient_size, raw_size = REQUEST.unpack(header)
        recipient, raw = _read_exactly(requests, recipient_size), _read_exactly(requests, raw_size)
        if recipient is None or raw is None:
            return
        envelope_recipient = recipient.decode("utf-8", "replace") or None
        answer = ANSWER.dump_json(_answer(raw, envelope_recipient, limits, memory_mb))
        answers.write(ANSWER_SIZE.pack(len(answer)) + answer)
        answers.flush()


if __name__ == "__main__":
    serve(sys.argv[1:])
