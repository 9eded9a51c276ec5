"""The naming contract (hakobu/naming.py): every MySQL name gets one BigQuery name, forever.

The expected names are pinned: a change of the mapping would move delivered columns and tables
to new names, so it must be a deliberate, visible change of this file.
"""

import random
import re

import pytest

from hakobu.naming import (MAX_COLUMN, collisions, column_name, renamed, source_note,
                           table_name, valid_column, with_note)
from hakobu.sqlquote import bq_string
from hakobu.types import ColumnInfo, column_spec

BQ_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
DAGSTER = re.compile(r"^[A-Za-z0-9_]+$")
RESERVED = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colon_")

# every kind of name MySQL accepts, with the BigQuery column name it is delivered under
COLUMNS = {
    "id": "id",                                    # valid: unchanged
    "Members": "Members",                          # case kept (existing deliveries)
    "order": "order",                              # reserved words are quoted, not renamed
    "select": "select",
    "_2024": "_2024",
    "my col": "my_col_7a2881",                     # space
    "ord$2024": "ord_2024_a76493",                 # $
    "a-b": "a_b_d44362",                           # -
    "a.b": "a_b_2e7336",                           # dot
    "Ünïcødé": "unicode_bef14f",                   # accents, ø
    "Straße": "strasse_58a377",                    # ß
    "名前": "col_7ec262",                           # no ASCII form: nothing left but the hash
    "2nd": "_2nd_c21365",                          # leading digit
    "_TABLE_x": "table_x_2b57b1",                  # BigQuery's reserved prefixes
    "_PARTITIONTIME": "partitiontime_124ec1",
    "_hakobu_seq": "hakobu_seq_0b5417",            # hakobu's own prefix
    "it's `q`": "it_s_q_ce2e76",                   # quotes and backticks
}


@pytest.mark.parametrize("mysql, bq", COLUMNS.items())
def test_every_kind_of_column_name_has_a_pinned_bigquery_name(mysql, bq):
    assert column_name(mysql) == bq
    assert BQ_COLUMN.fullmatch(bq) and not bq.lower().startswith(RESERVED)
    assert column_name(bq) == bq                   # idempotent: a mapped name is valid
    assert valid_column(bq)


def test_table_names_keep_more_but_lose_dollar_dot_and_hakobu():
    assert table_name("orders") == "orders" and table_name("Orders") == "Orders"
    assert table_name("order") == "order"
    assert table_name("_TABLE_x") == "_TABLE_x"    # a column rule only: the table is kept
    assert table_name("ord$2024") == "ord_2024_a76493"   # `$` is a partition decorator
    assert table_name("a.b") == "a_b_2e7336"       # `.` separates dataset and table
    assert table_name("my table") == "my_table_0d2458"
    assert table_name("_hakobu_state") == "hakobu_state_046ff6"   # never hakobu's own table
    assert table_name("名前") == "table_7ec262"
    for name in ("ord$2024", "a.b", "my table", "2024", "名前", "x-y"):
        assert DAGSTER.match(table_name(name))    # a valid Dagster asset-key part
        assert table_name(table_name(name)) == table_name(name)


def test_names_longer_than_bigquery_allows_are_cut_and_stay_apart():
    # MySQL names have at most 64 characters, so only a mapping could grow one past 300;
    # the rule holds all the same (and keeps the hash, so two long names stay apart)
    a, b = "x" * 290 + " a" * 10, "x" * 290 + " b" * 10
    assert MAX_COLUMN - 1 <= len(column_name(a)) <= MAX_COLUMN     # (a trailing _ dropped)
    assert len(column_name(b)) <= MAX_COLUMN and column_name(a) != column_name(b)
    assert not valid_column("y" * 301) and len(column_name("y" * 301)) == MAX_COLUMN


def test_mapping_is_deterministic_valid_and_idempotent_for_any_name():
    rng = random.Random(16)
    alphabet = "aZ09_ $-.`'\"\\/é名ß\t" + "".join(chr(c) for c in range(0x20, 0x7f))
    for _ in range(2000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 64)))
        col, tab = column_name(name), table_name(name)
        assert BQ_COLUMN.fullmatch(col) and not col.lower().startswith((*RESERVED, "_hakobu"))
        assert DAGSTER.match(tab) and not tab.lower().startswith("_hakobu")
        assert column_name(col) == col and table_name(tab) == tab
        assert column_name(name) == col             # no state: the same every time


def test_collisions_are_found_without_case_and_name_both_originals():
    assert collisions(["Orders", "orders", "x"], table_name) == [("Orders", ["Orders", "orders"])]
    assert collisions(["my col", "my_col_7a2881", "b"]) == [("my_col_7a2881",
                                                              ["my col", "my_col_7a2881"])]
    assert collisions(["my col", "my-col", "my_col"]) == []     # the hash keeps them apart
    assert renamed(["id", "my col"]) == {"my col": "my_col_7a2881"}


def test_the_original_name_is_recorded_and_combined_with_other_descriptions():
    assert source_note("my col") == "MySQL column: my col"
    marker = "hakobu form=clear gen=abcd1234: the source value"
    assert with_note(marker, source_note("a-b")) == f"{marker}; MySQL column: a-b"
    assert with_note(None, None) is None and with_note(marker, None) == marker


def test_descriptions_are_quoted_as_bigquery_string_literals():
    from tests.bq_live import _DESCRIPTION, _literal

    for text in ["MySQL column: it's `q`", "back\\slash", "line\nbreak\ttab", "名前 \x01"]:
        sql = f"OPTIONS(description={bq_string(text)})"
        assert _literal(_DESCRIPTION.search(sql)) == text
    with pytest.raises(ValueError):
        bq_string("nul\x00")


def test_a_column_spec_carries_its_bigquery_name():
    spec = column_spec(ColumnInfo("my col", "varchar", "varchar(10)", True))
    assert spec.name == "my col" and spec.bq_name == "my_col_7a2881" and spec.renamed
    assert "`my col` AS `my col`" in spec.select_sql     # the source side keeps the MySQL name
    plain = column_spec(ColumnInfo("id", "bigint", "bigint(20)", False))
    assert plain.bq_name == "id" and not plain.renamed
