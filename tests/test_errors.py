import pymysql
import requests

from hakobu.errors import ConfigError, LoadError, SourceUnavailable, is_transient


def test_transient_is_decided_in_one_place():
    assert is_transient(SourceUnavailable("x"))
    assert not is_transient(ConfigError("x"))
    assert not is_transient(LoadError("x"))
    assert is_transient(pymysql.err.OperationalError(2013, "Lost connection"))
    assert is_transient(pymysql.err.OperationalError(1927, "Connection was killed"))
    assert not is_transient(pymysql.err.ProgrammingError(1146, "Table doesn't exist"))
    assert is_transient(requests.exceptions.ConnectionError("refused"))
    assert not is_transient(ValueError("x"))


def test_error_text_names_where_and_what_to_do():
    e = LoadError("MERGE failed", tenant="alpha", table="members", hint="rerun")
    assert str(e) == "alpha/members: MERGE failed — rerun"
