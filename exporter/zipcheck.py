"""Cheap proof that an object is a ZIP: find its end-of-central-directory record in the last bytes.

A ZIP's EOCD record (22 bytes plus a comment of up to 65,535 bytes) sits at the very end, so one ranged
GET of the tail is enough; no need to download exports that may be large.
"""

from __future__ import annotations

import struct

__all__ = ["EOCD_MAX_SIZE", "ZipCheck", "check_zip_tail"]

_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_MIN_SIZE = 22
EOCD_MAX_SIZE = _EOCD_MIN_SIZE + 0xFFFF


class ZipCheck:
    """Outcome of a tail check: `ok`, and the entry count or the reason it is not a usable ZIP."""

    __slots__ = ("entries", "ok", "reason")

    def __init__(self, ok: bool, entries: int = 0, reason: str = "") -> None:
        self.ok = ok
        self.entries = entries
        self.reason = reason

    def __repr__(self) -> str:
        return f"ZipCheck(ok={self.ok}, entries={self.entries}, reason={self.reason!r})"


def check_zip_tail(tail: bytes) -> ZipCheck:
    """Validate the last bytes of an object (up to EOCD_MAX_SIZE of them) as the end of a ZIP."""
    position = tail.rfind(_EOCD_SIGNATURE)
    while position >= 0:
        record = tail[position : position + _EOCD_MIN_SIZE]
        if len(record) == _EOCD_MIN_SIZE:
            (_, _, _, _, total_entries, _, _, comment_length) = struct.unpack("<4sHHHHIIH", record)
            if position + _EOCD_MIN_SIZE + comment_length == len(tail):
                if total_entries == 0:
                    return ZipCheck(False, 0, "the ZIP has no entries")
                return ZipCheck(True, total_entries)
        position = tail.rfind(_EOCD_SIGNATURE, 0, position)
    return ZipCheck(False, 0, "no end-of-central-directory record: not a ZIP, or truncated")
