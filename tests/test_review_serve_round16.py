"""A ``POST /predict`` body that gives a key twice is refused naming that key by its whole location in the
body, a key named ``body`` included."""

from __future__ import annotations

from hftraining.inference.serve import loads_once, repeated_key_error


def test_a_key_given_twice_under_a_key_named_body_is_named_by_its_whole_location():
    value, where = loads_once('{"body": {"close": 1, "close": 2}}')
    assert value == {"body": {"close": 2}} and where == ("body", "close")
    line = repeated_key_error(where)
    assert line.startswith("body.close: given twice in one JSON object"), line
    _, where = loads_once(b'{"symbols": {"AEM": [{"close": 1, "close": 2}]}}')
    assert repeated_key_error(where).startswith("symbols.AEM[0].close: given twice"), repeated_key_error(where)
    _, where = loads_once(b'[{"a": 1, "a": 2}]')
    assert repeated_key_error(where).startswith("body[0].a: given twice"), repeated_key_error(where)
