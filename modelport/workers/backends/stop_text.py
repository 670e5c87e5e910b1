"""Stop sequences over streamed text: release what cannot start a stop, hold back what might.

Each stop sequence is followed by a Knuth-Morris-Pratt automaton, so every streamed character costs a
bounded, constant amount of work whatever the lengths of the stops and of the text held back.
"""

from __future__ import annotations


class _Matcher:
    """How much of one stop sequence the text seen so far ends with."""

    def __init__(self, stop: str) -> None:
        self.stop = stop
        self.matched = 0
        self._fallback = [0] * len(stop)  # longest proper prefix of stop[:i+1] that is also its suffix
        k = 0
        for i in range(1, len(stop)):
            while k and stop[i] != stop[k]:
                k = self._fallback[k - 1]
            if stop[i] == stop[k]:
                k += 1
            self._fallback[i] = k

    def step(self, char: str) -> bool:
        """Advance by one character; True when the whole stop sequence has just been seen."""
        k = self.matched
        while k and char != self.stop[k]:
            k = self._fallback[k - 1]
        if char == self.stop[k]:
            k += 1
        if k == len(self.stop):
            self.matched = 0
            return True
        self.matched = k
        return False


class StopText:
    def __init__(self, stops: list[str]) -> None:
        self._matchers = [_Matcher(stop) for stop in dict.fromkeys(stops) if stop]
        self._held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Returns the text safe to send and whether a stop sequence was reached (text before it is sent)."""
        text = self._held + piece
        start = len(self._held)
        for offset, char in enumerate(piece, start):
            completed = [matcher.stop for matcher in self._matchers if matcher.step(char)]
            if completed:  # of the stops ending here, the longest starts first
                self._held = ""
                return text[:offset + 1 - max(map(len, completed))], True
        keep = max((matcher.matched for matcher in self._matchers), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    def flush(self, tail: str = "") -> str:
        """What is left once generation ends without reaching a stop."""
        text, self._held = self._held + tail, ""
        return text
