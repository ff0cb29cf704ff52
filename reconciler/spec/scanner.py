"""ruamel's round-trip scanner, reading comments in one step.

ruamel gathers a comment one character at a time (``comment += ch``, a reader call per
character); a single 1 MB comment took over 20 s of CPU, more than the whole budget of
``validate``. This scanner takes the comment as one slice of the buffer and moves the
reader past it at once; everything else, and every token and position, is ruamel's.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml.scanner import RoundTripScanner

# What ends a comment, as ruamel's _THE_END (the reader's buffer always ends in "\0").
_COMMENT_END = re.compile("[\n\0\r\x85\u2028\u2029]")


class FastCommentScanner(RoundTripScanner):
    def scan_to_next_token(self) -> Any:
        """ruamel's own, with the comment branch in one step (see ``_comment``)."""
        srp = self.reader.peek
        srf = self.reader.forward
        if self.reader.index == 0 and srp() == "\ufeff":
            srf()
        white_space = " \t" if self.flow_level > 0 else " "
        while True:
            while srp() in white_space:
                srf()
            if srp() == "#":
                return self._comment()
            if self.scan_line_break() == "":
                return None
            start_mark = self.reader.get_mark()
            if not self.flow_level:
                self.allow_simple_key = True
            if srp() == "\n":  # empty top-level lines
                comment = ""
                ch = "\n"
                while ch:
                    ch = self.scan_line_break(empty_line=True)
                    comment += ch
                if srp() == "#":  # an empty line, then an indented comment
                    comment = comment.rsplit("\n", 1)[0] + "\n"
                return comment, start_mark, self.reader.get_mark()

    def _comment(self) -> tuple[str, Any, Any]:
        reader = self.reader
        start_mark = reader.get_mark()
        start = reader.pointer
        found = _COMMENT_END.search(reader.buffer, start)
        end = found.start() if found else len(reader.buffer) - 1
        comment = reader.buffer[start:end]
        # No line break inside: the reader's line stays, its column moves as forward() would move it.
        reader.pointer = end
        reader.index += end - start
        reader.column += (end - start) - comment.count("\ufeff")
        if reader.buffer[end] == "\0":  # the end of the stream: an explicit line break, as ruamel adds
            comment += "\n"
        ch = self.scan_line_break()
        while ch:  # blank lines after the comment belong to it
            comment += ch
            ch = self.scan_line_break()
        if not self.flow_level:
            self.allow_simple_key = True
        return comment, start_mark, reader.get_mark()


__all__ = ["FastCommentScanner"]
