"""Per-source parsing state: lines that other programs split in pieces.

Docker's json-file driver cuts a line longer than 16 KiB into records whose
``log`` text does not end in a newline; containerd/CRI-O mark such pieces with
``P``.  Parsed one by one, the first piece of a long ``Received request`` line
would lose its fields and a later piece could start with text that looks like
a result line.  :class:`LogStream` joins the pieces back into one line before
parsing.  It holds no I/O; one instance per source.
"""

from __future__ import annotations

from parsers.dispatch import Events, parse_line, parse_nested, parse_record, parse_wrapped
from parsers.envelope import CRI_RECORD, unwrap_json

# A joined line longer than this is dropped (and counted by the caller through
# ``dropped``): nothing useful is that long, and memory stays bounded.
DEFAULT_MAX_JOINED = 4 * 1024 * 1024
# First characters of a Docker json-file record or a CRI record (and the empty line).
_MAYBE_SPLIT = frozenset("{0123456789") | {""}


class LogStream:
    __slots__ = ("_pieces", "_size", "_skipping", "_stamp", "dropped", "failed", "max_joined")

    def __init__(self, max_joined: int = DEFAULT_MAX_JOINED) -> None:
        self._pieces: list[str] = []
        self._size = 0
        self._stamp: str | None = None
        self._skipping = False  # inside an oversized split line, until its last piece
        self.max_joined = max_joined
        self.dropped = 0
        self.failed = 0  # lines a parser raised on (a bug): skipped, counted by the caller

    def feed(self, line: str) -> Events:
        """The events of one physical line (none while a split line is still incomplete).

        A line a parser raises on gives none and is counted in ``failed``: one bad line never
        stops the reading of the ones after it."""
        try:
            first = line[:1]
            if first not in _MAYBE_SPLIT and not self._pieces and not self._skipping:
                return parse_nested(line, 0, None)
            if first == "{" and '"log"' in line:
                record = unwrap_json(line)
                if record is not None:
                    if record.logger is None and (record.partial or self._pieces or self._skipping):
                        return self._piece(record.text, record.stamp, not record.partial)
                    # Read once: a container's whole log is records like this one.
                    return self._flush() + parse_record(record) if self._pieces else parse_record(record)
            elif first.isdigit() and (self._pieces or self._skipping or " P " in line[25:48]):
                m = CRI_RECORD.match(line)
                if m is not None:
                    return self._piece(line[m.end() :], m.group(1), m.group(2) == "F")
            if self._pieces:
                # The rest of a split line never came: parse what there is, then this line.
                return self._flush() + parse_line(line)
            return parse_line(line)
        except Exception:
            self.failed += 1
            return ()

    def _piece(self, text: str, stamp: str | None, last: bool) -> Events:
        if self._skipping:
            self._skipping = not last
            return ()
        if not self._pieces:
            self._stamp = stamp
        self._pieces.append(text)
        self._size += len(text)
        if self._size > self.max_joined:
            self._pieces.clear()
            self._size = 0
            self.dropped += 1
            self._skipping = not last
            return ()
        return self._flush() if last else ()

    def _flush(self) -> Events:
        if not self._pieces:
            return ()
        text = "".join(self._pieces)
        self._pieces.clear()
        self._size = 0
        return parse_wrapped(text, self._stamp)

    def close(self) -> Events:
        """End of input: whatever piece is still pending."""
        return self._flush()
