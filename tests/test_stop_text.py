"""Stop sequences over streamed pieces: nothing after a stop is released, nothing before it is held back."""

from __future__ import annotations

from modelport.workers.backends.stop_text import StopText


def feed_all(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    text = StopText(stops)
    released = ""
    for piece in pieces:
        ready, hit = text.feed(piece)
        released += ready
        if hit:
            return released, True
    return released + text.flush(), False


def test_a_stop_split_across_pieces_is_caught_and_not_sent() -> None:
    assert feed_all(["\nUser:"], ["Paris is the capital.", "\nUs", "er: next"]) == ("Paris is the capital.", True)


def test_text_that_only_looks_like_a_stop_is_released() -> None:
    assert feed_all(["END"], ["the E", "ND", "ING"]) == ("the ", True)
    assert feed_all(["END"], ["the E", "nd of it"]) == ("the End of it", False)


def test_held_text_is_released_at_the_end() -> None:
    text = StopText(["STOP"])
    assert text.feed("go ST") == ("go ", False)
    assert text.flush() == "ST"


def test_without_stops_everything_passes_through() -> None:
    assert feed_all([], ["a", "b"]) == ("ab", False)
