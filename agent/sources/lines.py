"""Bytes to lines: files, compressed files and stdin, read in large blocks; a pipe or a
terminal as its lines come, paced as a followed file is (:mod:`agent.sources.pacing`).

A gzip, bzip2, xz or zstd stream (logrotate's ``compress`` with any of its
``compresscmd``) is told by its first bytes, whatever its name, and decompressed
as it is read.

A file that begins with a UTF-16 byte order mark (what Windows PowerShell 5's
``>`` writes, ``kubectl logs pod > vllm.log`` there) is read as UTF-16 and
handed on as UTF-8.

A line is what ends in ``\\n`` (a bare ``\\r`` does not end one).  Lines that
cannot be parsed safely are counted and skipped, never raised: invalid UTF-8,
NUL bytes, lines longer than the limit (a 10 MB line is read past without
being held in memory), and a last line without its newline (a writer cut off
mid-line).  Skipped lines still take their number, so the numbers of the
lines that follow stay true.
"""

from __future__ import annotations

import codecs
import os
import stat
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from types import ModuleType
from typing import BinaryIO, NamedTuple, Protocol

from agent.sources.pacing import DEFAULT_PIPE_BYTES, paced_reads, widen_pipe

# Bytes asked of one read of a file (and the most one read of a compressed file gives): a block's text and
# its lines stay small while they are parsed.  Blocks of 1 MiB took 9 MiB more at the peak of a replay, for
# no less CPU.
BLOCK = 128 << 10
DEFAULT_MAX_LINE = 4 * 1024 * 1024
UTF16_MARKS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class Codec(NamedTuple):
    """A compression format a log may come in, told by its first bytes (as ``file`` tells it)."""

    name: str
    new: Callable[[], Decompressor]


class Decompressor(Protocol):
    """What :class:`DecompressedStream` asks of a decompressor: the interface of bz2's, lzma's and zstd's."""

    eof: bool
    unused_data: bytes
    needs_input: bool

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _Inflater:
    """zlib's gzip decompressor behind the interface of the others (it hands back what it did not take
    in ``unconsumed_tail`` where they keep it)."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflate.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._inflate.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        return self._inflate.decompress(self._inflate.unconsumed_tail or data, max_length)

    def flush(self) -> bytes:
        """What it holds of a stream cut short."""
        return self._inflate.flush()


def zstd_module() -> ModuleType:
    """Python's own zstd module (3.14 on), else its backport (a dependency of kvwatch before 3.14)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    return zstd


XZ_MEMORY_LIMIT = 128 << 20


# Each module is imported when a stream in its format is met (a followed log is never one).
def _bzip2_decompressor() -> Decompressor:
    import bz2

    return bz2.BZ2Decompressor()


def _xz_decompressor() -> Decompressor:
    import lzma

    # xz's presets decompress in at most 65 MiB; a file may ask for 1.5 GiB (its dictionary), which the
    # output fills.  (zstd's decoder refuses windows over 128 MiB by default; bzip2 needs under 4 MiB.)
    return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)


def _zstd_decompressor() -> Decompressor:
    return zstd_module().ZstdDecompressor()


CODECS = {
    codec.name: codec
    for codec in (
        Codec("gzip", _Inflater),
        Codec("bzip2", _bzip2_decompressor),
        Codec("xz", _xz_decompressor),
        Codec("zstd", _zstd_decompressor),
    )
}
# Packed forms kvwatch does not read: how to hand it the log instead.
UNPACK_FIRST = {
    "lz4": "lz4-compressed, which kvwatch does not unpack: `lz4 -dc FILE | kvwatch replay -`",
    "zip": "a zip archive, which kvwatch does not unpack: `unzip -p FILE | kvwatch replay -`",
}
# A journal file copied off a host (/var/log/journal/<machine>/system.journal): journalctl reads it.
JOURNAL_FILE = b"LPKSHHRH"
JOURNAL_REASON = (
    "a systemd journal file, which kvwatch does not read directly: `journalctl --file FILE -o json | kvwatch replay -`"
)
_OPENINGS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"PK\x03\x04", "zip"),
)
PACKED_OPENING = 10  # the bytes that tell a packed form (bzip2's opening is the longest)
# Bytes looked at before reading: a tar archive is told by "ustar" at 257.
OPENING = 262


def packed_format(opening: bytes) -> str | None:
    """The compression (or zip archive) a stream that begins with ``opening`` is in; None for text."""
    for magic, name in _OPENINGS:
        if opening.startswith(magic):
            return name
    # bzip2: "BZh", the block size, then the magic of a first block or of the end of an empty stream.
    if opening[:3] == b"BZh" and opening[3:4].isdigit() and opening[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2"
    return None


def codec_of(opening: bytes) -> Codec | None:
    """How to decompress a stream that begins with ``opening``; None for plain text.  Raises
    :class:`InputError` for a form kvwatch does not read."""
    name = packed_format(opening)
    if name is None:
        if opening.startswith(JOURNAL_FILE):
            raise InputError(JOURNAL_REASON)
        return None
    if name in UNPACK_FIRST:
        raise InputError(UNPACK_FIRST[name])
    if name == "zstd":
        try:
            zstd_module()
        except ImportError:
            raise InputError(
                "zstd-compressed, and this Python has no zstd module (pip install backports.zstd); "
                "or: `zstd -dc FILE | kvwatch replay -`"
            ) from None
    return CODECS[name]


class DecompressedStream:
    """Decompresses a gzip, bzip2, xz or zstd stream as it is read, so that a file cut off mid-stream
    still yields all it holds.

    (``gzip.GzipFile.read`` drops the data of a call that meets a truncated
    end.)  Concatenated streams -- rotated logs joined with ``cat`` -- are read
    one after the other.  Each read returns at most ``BLOCK`` bytes, however
    much a compressed block inflates to (a bomb of NULs inflates a
    thousandfold), so memory stays bounded.  A problem is kept in ``error``
    rather than raised.
    """

    def __init__(self, raw: BinaryIO, codec: Codec) -> None:
        self._raw = raw
        self._codec = codec
        self._decompressor = codec.new()
        self._input = b""  # compressed bytes not yet handed to the decompressor
        self._in_stream = False
        self._peeked = b""
        self.error: str | None = None

    def peek(self) -> bytes:
        """The first bytes it decompresses to, kept for the first read."""
        if not self._peeked:
            self._peeked = self.read()
        return self._peeked

    def read(self, size: int = -1) -> bytes:
        if self._peeked:
            data, self._peeked = self._peeked, b""
            return data
        codec = self._codec
        while self.error is None:
            decompressor = self._decompressor
            if decompressor.eof:  # a stream ended: what follows it begins the next
                self._input = decompressor.unused_data + self._input
                decompressor = self._decompressor = codec.new()
            data = b""
            if decompressor.needs_input:
                if not self._input:
                    self._input = self._raw.read(BLOCK)
                    if not self._input:
                        return self._end()
                data, self._input = self._input, b""
            self._in_stream = True
            try:
                data = decompressor.decompress(data, BLOCK)
            except Exception as exc:  # each module raises its own class on data not in its format
                self.error = f"cannot decompress its {codec.name} data: {exc}"
                return b""
            if decompressor.eof:
                self._in_stream = False
            if data:
                return data
        return b""

    def _end(self) -> bytes:
        if not self._in_stream:
            return b""
        self.error = f"{self._codec.name} data cut short (the end of the file is missing)"
        flush = getattr(self._decompressor, "flush", None)  # zlib may still hold some of it
        return flush() if flush is not None else b""


class Utf16Stream:
    """UTF-16 text (its byte order told by its mark) read as UTF-8 bytes.  A code unit that is no
    character (a lone surrogate) stays one, so the line that holds it is skipped as invalid UTF-8."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._decode = codecs.getincrementaldecoder("utf-16")("surrogatepass").decode

    def read(self, size: int = -1) -> bytes:
        return self._recoded(self._raw.read, size)

    def read1(self, size: int = -1) -> bytes:
        """What has come so far (a pipe's writer still writing), recoded."""
        return self._recoded(getattr(self._raw, "read1", self._raw.read), size)

    def _recoded(self, read, size: int) -> bytes:
        while True:
            data = read(size if size > 0 else BLOCK)
            text = self._decode(data, final=not data)
            if text or not data:  # half a character waits for its other half
                return text.encode("utf-8", "surrogatepass")


class InputError(Exception):
    """A one-line, user-facing reason an input cannot be read."""


class Input:
    """An opened input: its display name, byte stream and reference time for year-less stamps.

    ``path`` is set for a plain (uncompressed) regular file, which can be read in slices;
    ``live`` for a pipe or a terminal, whose lines are handed on as they come.
    """

    def __init__(
        self,
        name: str,
        stream: BinaryIO,
        modified: datetime,
        closer=None,
        path: str | None = None,
        live: bool = False,
    ) -> None:
        self.name = name
        self.stream = stream
        self.modified = modified
        self._closer = closer
        self.path = path
        self.live = live

    def close(self) -> None:
        if self._closer is not None:
            self._closer()


def _is_regular(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def open_input(name: str) -> Input:
    """Open a path (plain or compressed, recognised by content) or ``-`` for stdin."""
    if name == "-":
        stdin = sys.stdin.buffer
        return Input("-", _reading(name, stdin), datetime.now(UTC), live=not _is_regular(stdin))
    try:
        if os.path.isdir(name):
            raise InputError(f"{name}: is a directory (give the logs in it: {os.path.join(name, '*.log')})")
        raw = open(name, "rb")  # noqa: SIM115 - closed by Input.close
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {exc.strerror or exc}") from None
    modified = datetime.fromtimestamp(os.fstat(raw.fileno()).st_mtime, UTC)
    plain = _is_regular(raw)  # else a named pipe, or a device
    try:
        stream = _reading(name, raw)
    except InputError:
        raw.close()
        raise
    # Only the bytes of a plain file are its lines, so only they can be read in slices (a slice's
    # first byte may be half of a UTF-16 character).
    path = name if plain and stream is raw else None
    return Input(name, stream, modified, raw.close, path, live=not plain)


def _reading(name: str, raw: BinaryIO) -> BinaryIO:
    """What to read ``raw`` through, told by its first bytes: itself, a decompressor or a recoder.  A form
    kvwatch does not read is refused naming the input (``FILE`` in the reason's command, for stdin)."""
    try:
        return _stream_for(raw)
    except InputError as exc:
        reason = str(exc) if name == "-" else str(exc).replace("FILE", name)
        raise InputError(f"{name}: {reason}") from None


def _stream_for(raw: BinaryIO) -> BinaryIO:
    opening = raw.peek(OPENING)[:OPENING] if hasattr(raw, "peek") else b""
    codec = codec_of(opening)
    if codec is not None:
        stream = DecompressedStream(raw, codec)
        _refuse_archive(stream.peek())  # logs.tar.gz
        return stream
    _refuse_archive(opening)
    if opening[:2] in UTF16_MARKS:
        return Utf16Stream(raw)
    return raw


def _refuse_archive(opening: bytes) -> None:
    """A tar archive (a support bundle) holds many logs, and headers between them that are no lines."""
    if opening[257:262] == b"ustar":
        raise InputError(
            "a tar archive, which kvwatch does not unpack: extract it (`tar -xf FILE`) and replay its logs, or "
            "`tar -xOf FILE | kvwatch replay -` for all of them as one log"
        )


class LineSplitter:
    """Turns byte chunks into decoded lines, keeping an unfinished last line for the next chunk.

    ``None`` stands for a skipped line, counted by reason in ``skipped`` (a
    dict of its own, or one shared with the source's stats).  The replay reader,
    the live tailer and the journal share it, so all skip the same lines.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, skipped: dict[str, int] | None = None) -> None:
        self.max_line = max_line
        self.lines = 0
        self.skipped: dict[str, int] = {} if skipped is None else skipped
        self.rest = b""
        self._skipping = False  # inside a line longer than the limit

    @property
    def skipping(self) -> bool:
        """True inside a line longer than the limit, until its end."""
        return self._skipping

    def skip_first_line(self) -> None:
        """Begin inside a line too long to keep (a reader resumed mid-line): read past its end."""
        self._skipping = True
        self.rest = b""

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def feed(self, chunk: bytes) -> list[str | None]:
        """The complete lines ``chunk`` finishes, in order (without their ``\\n``)."""
        out: list[str | None] = []
        if self._skipping:
            newline = chunk.find(b"\n")
            if newline == -1:
                return out
            self._skipping = False
            self.lines += 1
            self._skip("too_long")
            out.append(None)
            chunk = chunk[newline + 1 :]
        rest = self.rest
        data = rest + chunk if rest else chunk
        end = data.rfind(b"\n")
        if end == -1:
            self.rest = data
        else:
            self.rest = data[end + 1 :]
            batch = self._decode(data[:end])
            self.lines += len(batch)
            if out:
                out.extend(batch)
            else:
                out = batch
        if self.rest[:1] == b"\x00":
            # A run of NUL bytes where a line begins is a hole, not text: what a writer without
            # O_APPEND leaves when copytruncate empties its file under it, or a crash before the
            # data reached the disk.  It is dropped as it comes (however long), and the line
            # written after it is read.
            self.rest = self.rest.lstrip(b"\x00")
        if len(self.rest) > self.max_line:
            self._skipping = True
            self.rest = b""
        return out

    def finish(self) -> list[str | None]:
        """End of input: a line cut off mid-write is counted and skipped, never guessed at."""
        out: list[str | None] = []
        if self._skipping:
            self._skipping = False
            self.lines += 1
            self._skip("too_long")
            out.append(None)
        elif self.rest:
            self.lines += 1
            self._skip("partial")
        self.rest = b""
        return out

    def _decode(self, block: bytes) -> list[str | None]:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            return [self._decode_one(raw) for raw in block.split(b"\n")]
        lines: list[str | None] = text.split("\n")
        if "\x00" in text or len(block) > self.max_line:
            lines = [self._check(line) for line in lines]
        return lines

    def _decode_one(self, raw: bytes) -> str | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._skip("invalid_utf8")
            return None
        return self._check(line)

    def _check(self, line: str) -> str | None:
        if "\x00" in line:
            line = line.lstrip("\x00")  # a hole before the line (see ``feed``)
            if "\x00" in line:
                self._skip("nul")
                return None
        if len(line) > self.max_line:
            self._skip("too_long")
            return None
        return line


class LineReader:
    """Splits a whole byte stream into lines; ``None`` stands for a skipped line."""

    def __init__(
        self, stream: BinaryIO, max_line: int = DEFAULT_MAX_LINE, limit: int | None = None, live: bool = False
    ) -> None:
        self._stream = stream
        self._live = live  # a pipe or terminal: take what has come rather than wait for a whole block
        self._splitter = LineSplitter(max_line)
        self._left = limit  # bytes still to read, for a slice of a file
        self.error: str | None = None

    @property
    def lines(self) -> int:
        return self._splitter.lines

    @property
    def skipped(self) -> dict[str, int]:
        return self._splitter.skipped

    def batches(self) -> Iterator[list[str | None]]:
        """Lists of consecutive lines (without their ``\\n``), in order."""
        feed = self._splitter.feed
        for chunk in self._live_chunks() if self._live else self._chunks():
            batch = feed(chunk)
            if batch:
                yield batch
        self.error = self.error or getattr(self._stream, "error", None)
        last = self._splitter.finish()
        if last:
            yield last

    def _chunks(self) -> Iterator[bytes]:
        """A file's bytes (or its slice's) in blocks of BLOCK."""
        read = self._stream.read
        while True:
            size = BLOCK if self._left is None else min(BLOCK, self._left)
            chunk = self._read(read, size) if size else b""
            if not chunk:
                return
            if self._left is not None:
                self._left -= len(chunk)
            yield chunk

    def _live_chunks(self) -> Iterator[bytes]:
        """A pipe's or a terminal's bytes as they come: a trickle at once, a flow in batches
        (:mod:`agent.sources.pacing`).  A writer that writes line by line would otherwise wake the
        reading for every few lines; the pipe is widened to hold a batch, so it need not wait for us."""
        read = getattr(self._stream, "read1", self._stream.read)
        try:
            capacity = widen_pipe(self._stream.fileno())  # a terminal: the default (a person types no flow)
        except (OSError, ValueError, AttributeError):  # a stream recoded from one (UTF-16, gzip)
            capacity = DEFAULT_PIPE_BYTES
        return paced_reads(partial(self._read, read), capacity, time.sleep)

    def _read(self, read: Callable[[int], bytes], size: int) -> bytes:
        """``read(size)``; on a failing disk or network filesystem the error is kept and the input ends."""
        try:
            return read(size)
        except (OSError, EOFError) as exc:
            self.error = str(exc) or exc.__class__.__name__
            return b""
