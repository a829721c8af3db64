from services.ticketer.core import format_reference, reference_number


def test_reference_round_trip():
    assert format_reference("mi", 10042) == "[#mi-10042]"
    assert reference_number("[#mi-10042]") == 10042
    assert reference_number("[#mi-]") is None
