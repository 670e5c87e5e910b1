"""Stop sequences over streamed text: release what cannot start a stop, hold back what might."""

from __future__ import annotations


class StopText:
    def __init__(self, stops: list[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Returns the text safe to send and whether a stop sequence was reached (text before it is sent)."""
        text = self._held + piece
        for stop in self._stops:
            at = text.find(stop)
            if at >= 0:
                self._held = ""
                return text[:at], True
        keep = max((size for stop in self._stops for size in range(1, len(stop)) if text.endswith(stop[:size])),
                   default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    def flush(self, tail: str = "") -> str:
        """What is left once generation ends without reaching a stop."""
        text, self._held = self._held + tail, ""
        return text
