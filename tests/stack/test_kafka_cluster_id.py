"""The KRaft cluster id handed to Kafka's storage tool."""

from __future__ import annotations

import base64

from mailintake.stack.kafka import new_cluster_id

#: 0xF8 puts 0b111110 (62, ``-`` in URL-safe base64) in the id's first character.
LEADING_DASH = bytes([0xF8]) + bytes(15)
PLAIN = bytes(range(16))


def test_an_id_starting_with_a_dash_is_drawn_again():
    draws = iter([LEADING_DASH, LEADING_DASH, PLAIN])

    cluster_id = new_cluster_id(lambda size: next(draws))

    assert base64.urlsafe_b64encode(LEADING_DASH).decode().startswith("-")
    assert cluster_id == base64.urlsafe_b64encode(PLAIN).rstrip(b"=").decode()


def test_an_id_is_22_url_safe_characters():
    cluster_id = new_cluster_id()

    assert len(cluster_id) == 22
    assert base64.urlsafe_b64decode(cluster_id + "==") and not cluster_id.startswith("-")
