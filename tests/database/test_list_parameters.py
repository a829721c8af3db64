"""List parameters on the stack's PostgreSQL: sent as binary arrays, every element intact."""

from __future__ import annotations

import pytest
from psycopg.adapt import PyFormat
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import BigInteger, Text, any_, bindparam, literal, select
from sqlalchemy.dialects.postgresql import ARRAY

from mailintake.database import engine_for

pytestmark = pytest.mark.stack

AWKWARD = ['["acct","x@example.com","Drucker – kaputt"]', "back\\slash", "{braces}, comma", "Grüße", "", None]


def test_a_list_parameter_goes_as_a_binary_array(stack):
    with engine_for(stack.database_url).connect() as connection:
        adapters = connection.connection.dbapi_connection.adapters
        assert adapters.get_dumper(list, PyFormat.AUTO) is ListBinaryDumper


def test_text_and_bigint_arrays_come_back_as_sent(stack):
    with engine_for(stack.database_url).connect() as connection:
        assert connection.scalar(select(bindparam("texts", AWKWARD, type_=ARRAY(Text)))) == AWKWARD
        numbers = [1, -5, 2**40, None]
        assert connection.scalar(select(bindparam("numbers", numbers, type_=ARRAY(BigInteger)))) == numbers


def test_any_of_an_array_finds_an_element_with_quotes_and_backslashes(stack):
    with engine_for(stack.database_url).connect() as connection:
        for element in AWKWARD[:4]:
            assert connection.scalar(select(literal(element) == any_(bindparam(None, AWKWARD, type_=ARRAY(Text)))))
        assert not connection.scalar(select(literal("absent") == any_(bindparam(None, AWKWARD, type_=ARRAY(Text)))))
