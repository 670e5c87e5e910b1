"""Stop sequences over streamed pieces: nothing after a stop is released, nothing before it is held back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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


def reference(stops: list[str], text: str) -> tuple[str, bool]:
    """What the whole text releases, cut where the first stop to end starts (the longest, on a tie)."""
    ends = [(text.find(stop) + len(stop), -len(stop)) for stop in stops if stop and stop in text]
    if not ends:
        return text, False
    end, negative_length = min(ends)
    return text[:end + negative_length], True


@given(stops=st.lists(st.text(alphabet="ab", min_size=1, max_size=5), max_size=4),
       pieces=st.lists(st.text(alphabet="abc", max_size=6), max_size=12))
def test_streamed_pieces_release_what_the_whole_text_would(stops: list[str], pieces: list[str]) -> None:
    assert feed_all(stops, pieces) == reference(stops, "".join(pieces))


def test_a_long_stop_is_followed_in_linear_time() -> None:
    """An 80 KB stop of one repeated character cost the old matcher ~180 ms per token (every prefix of the
    stop compared again at each token): these 2,000 tokens took over six minutes; the automaton does a
    bounded amount of work per character."""
    text = StopText(["a" * 80_000])
    for _ in range(2_000):
        assert text.feed("a" * 30) == ("", False)
    assert text.feed("b") == ("a" * 60_000 + "b", False)
