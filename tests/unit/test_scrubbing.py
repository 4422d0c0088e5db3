"""No literal from SQL or a URL ever leaves in a template: a seeded corpus per dialect, every literal form.

Templates go into alert titles, JSON details, webhooks and OTLP alert spans. Each generated statement
embeds distinctive secrets (`Zq…`, random or word-like) in one literal form; the template must carry
neither the secret nor any 6-character piece of it, and must stay useful: the same statement with
other values gives the same template, and table and column names survive.
"""

from __future__ import annotations

import random
import re

import pytest

from otel_perf.processors.normalize import normalize_sql, path_template, url_template
from tests.support.secrets_corpus import (
    CORPUS,
    FORMS,
    leaked,
    random_secret,
    random_token,
    random_url_secret,
)


def test_generated_statements_never_leak_a_literal() -> None:
    failures = []
    for case in CORPUS:
        template = normalize_sql(case.statement, case.dialect)
        leaks = [leak for secret in case.secrets if (leak := leaked(secret, template, case.skeleton))]
        if leaks:
            failures.append((case.dialect, case.statement, template, leaks))
    assert not failures, f"{len(failures)} of {len(CORPUS)} leaked, e.g. {failures[:3]}"


def test_generated_statements_keep_their_shape() -> None:
    failures = []
    for case in CORPUS:
        template = normalize_sql(case.statement, case.dialect)
        if case.twin is not None and normalize_sql(case.twin, case.dialect) != template:
            failures.append(("twin differs", case.statement, case.twin, template))
        if case.parameterized is not None:
            expected = normalize_sql(case.parameterized, case.dialect)
            if template != expected:
                failures.append(("not the parameterized template", case.statement, expected, template))
        missing = [name for name in case.names if name not in template]
        if missing:
            failures.append(("names lost", case.statement, missing, template))
    assert not failures, f"{len(failures)} of {len(CORPUS)} changed shape, e.g. {failures[:3]}"


def test_corpus_covers_every_form_in_every_dialect() -> None:
    """The generator reaches comments, backslashes and cut statements in each dialect, and each form."""
    for dialect in FORMS:
        cases = [case for case in CORPUS if case.dialect == dialect]
        assert sum(case.cut for case in cases) > 40
        assert sum(case.parameterized is not None for case in cases) > len(cases) // 2
        for marker in ("/*", "--", "\\", "'it''s", "%'", '{"', "."):
            assert any(marker in case.statement for case in cases), (dialect, marker)
    joined = "\n".join(case.statement for case in CORPUS)
    strings = ("E'", "N'", "U&'", "_utf8", "$$", "$tag$", "X'", "B'", "\\'", '\\"', "# ")
    numbers = ("0x", "0X", "0b", "e10", "E-3")
    for marker in strings + numbers:
        assert marker in joined, marker
    assert re.search(r"\d_\d", joined) and re.search(r"[ (]\.\d", joined)


# --- the reproduced leaks, one by one -------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "mariadb", "mssql", "mongodb", None, "some_new_db"])
def test_double_quoted_value_is_a_literal_outside_ansi_dialects(dialect: str | None) -> None:
    template = normalize_sql('SELECT * FROM users WHERE pw = "hunter2"', dialect)
    assert template == "SELECT * FROM users WHERE pw = ?"


@pytest.mark.parametrize("dialect", ["postgresql", "oracle", "db2", "cockroachdb"])
def test_double_quotes_are_identifiers_in_ansi_dialects(dialect: str) -> None:
    template = normalize_sql('SELECT "Users"."Id" FROM "Users" WHERE "Status" = 1 AND "a b" > $1', dialect)
    assert template == 'SELECT "Users"."Id" FROM "Users" WHERE "Status" = ? AND "a b" > ?'


def test_db_system_is_case_insensitive() -> None:
    assert normalize_sql('SELECT "x" FROM t', "PostgreSQL") == 'SELECT "x" FROM t'
    assert normalize_sql('SELECT "x" FROM t', "MySQL") == "SELECT ? FROM t"


@pytest.mark.parametrize("dialect", ["sqlite", "mssql", None])
def test_sqlalchemy_sqlite_quoting_survives_the_context_rule(dialect: str | None) -> None:
    statement = 'SELECT "order".id, "order".status FROM "order" WHERE "order".id = ? AND "order".total > 10'
    assert normalize_sql(statement, dialect) == (
        'SELECT "order".id, "order".status FROM "order" WHERE "order".id = ? AND "order".total > ?'
    )
    for statement in (
        'UPDATE "order" SET "group"=? WHERE "order".id = ?',
        'INSERT INTO "order" (id) VALUES (?)',
        'DELETE FROM "order" WHERE "order".id = ?',
        'SELECT t."Col", "s"."t".x FROM "s"."t" AS "alias" JOIN "u" ON "u".id = t.id',
        'CREATE TABLE IF NOT EXISTS "order" (id INTEGER)',
    ):
        assert normalize_sql(statement, dialect) == statement


@pytest.mark.parametrize(
    "statement",
    [
        'SELECT "Zqsecret" FROM t',  # a string in SQLite when no column has that name
        'SELECT * FROM t WHERE name IN ("Zqsecret", "b")',
        'SELECT * FROM t WHERE "Zqsecret" = name',
        'SELECT x -- FROM\n, "Zqsecret" FROM t',  # a keyword in a comment does not count
        'SELECT x /* t. */"Zqsecret" FROM t',  # nor a dot in one
        "SELECT 'a.'\"Zqsecret\" FROM t",  # nor in a string
        'SELECT 1."Zqsecret" FROM t',  # a number's dot is not a qualifier
        'SELECT "Zqsecret".5 FROM t',
        'SELECT x AS y, "Zqsecret" FROM t',
    ],
)
@pytest.mark.parametrize("dialect", ["sqlite", "mssql", None])
def test_context_rule_keeps_only_certain_names(statement: str, dialect: str | None) -> None:
    assert "zqsecret" not in normalize_sql(statement, dialect).lower()


@pytest.mark.parametrize("dialect", ["mysql", "postgresql", "sqlite", "mssql", None])
def test_backslash_escape_does_not_end_the_literal_early(dialect: str | None) -> None:
    template = normalize_sql(r"SELECT * FROM t WHERE a = 'it\'s sk_live_abc' AND b = 1", dialect)
    assert "sk_live" not in template and "abc" not in template
    assert template.startswith("SELECT * FROM t WHERE a = ?")
    template = normalize_sql(r"SELECT * FROM t WHERE a = E'it\'s sk_live_abc' AND b = 1", dialect)
    assert "sk_live" not in template and "abc" not in template


@pytest.mark.parametrize("dialect", ["mysql", "postgresql", "sqlite", "mssql", None])
def test_backslash_as_plain_character_does_not_hide_the_next_literal(dialect: str | None) -> None:
    template = normalize_sql(r"SELECT * FROM t WHERE p = 'C:\' AND x = 'secret' AND y = 'more'", dialect)
    assert "secret" not in template and "more" not in template
    assert template.startswith("SELECT * FROM t WHERE p = ?")


def test_postgresql_mixing_e_strings_and_standard_strings() -> None:
    # Valid PostgreSQL: backslashes escape in E'' only. Neither reading alone finds every literal.
    statement = r"INSERT INTO t VALUES ('C:\temp\', E'a\\\'Zqfirst', 'C:\x\') /* it's Zqsecond -- */"
    template = normalize_sql(statement, "postgresql")
    assert template.startswith("INSERT INTO t VALUES (?")
    assert "zqfirst" not in template.lower() and "zqsecond" not in template.lower()


def test_nested_comment_loses_nothing_after_it() -> None:
    for dialect in ("postgresql", "mssql", "mysql", "sqlite", None):
        assert normalize_sql("/* a /* b */ Zqsecret */ SELECT id FROM t WHERE x = 1", dialect) == (
            "SELECT id FROM t WHERE x = ?"
        )


def test_without_backslash_nothing_is_lost() -> None:
    statement = "SELECT * FROM t WHERE a = 'it''s' AND b = 'x' AND c IN (1, 2)"
    assert normalize_sql(statement, "mysql") == "SELECT * FROM t WHERE a = ? AND b = ? AND c IN (?)"


@pytest.mark.parametrize(
    ("statement", "dialect"),
    [
        ("SELECT /* a /* b */ Zqsecret */ 1", "postgresql"),  # nested comments (PostgreSQL, SQL Server)
        ("SELECT /* a /* b */ 'x */ Zqsecret'", "mysql"),  # ...or not (MySQL): both readings
        ("SELECT `a'b` FROM t WHERE x = 'Zqsecret'", "mysql"),
        ("SELECT [it's] FROM t WHERE x = 'Zqsecret'", "mssql"),
        ("SELECT * FROM t WHERE x = 1 # Zqsecret", "mysql"),
        ("SELECT * FROM t WHERE x = 1 # Zqsecret", None),
        ("SELECT q'[it's Zqsecret]' FROM dual", "oracle"),
        ("SELECT $tag1$ it's Zqsecret $tag1$", "postgresql"),
        ("SELECT * FROM t WHERE x = 'Zqsec", "sqlite"),
        ('{"find": "users", "filter": {"name": "Zqsecret", "age": 424242}}', "mongodb"),
        ("find {'filter': {'name': 'Zqsecret'}}", "mongodb"),
        ("SELECT * FROM t WHERE price > $424242.424242", "mssql"),
        ("SELECT * FROM t WHERE x = 42.424242E-", "sqlite"),  # a number cut short
        ("SELECT 1.5Zqsecret", "postgresql"),  # PostgreSQL reads `1.5 AS Zqsecret`
    ],
)
def test_other_quoting_forms(statement: str, dialect: str | None) -> None:
    template = normalize_sql(statement, dialect).lower()
    assert "zqsec" not in template and "4242" not in template


def test_identifier_quotes_kept_where_they_are_names() -> None:
    assert normalize_sql("SELECT `order`.`id` FROM `order` WHERE `order`.`id` = %s", "mysql") == (
        "SELECT `order`.`id` FROM `order` WHERE `order`.`id` = ?"
    )
    assert normalize_sql("SELECT TOP 10 [order].[id] FROM [dbo].[order] WHERE [order].[id] = ?", "mssql") == (
        "SELECT TOP ? [order].[id] FROM [dbo].[order] WHERE [order].[id] = ?"
    )
    assert normalize_sql("SELECT * FROM #temp WHERE x = 1", "mssql") == "SELECT * FROM #temp WHERE x = ?"
    assert normalize_sql("SELECT data #> '{a,b}' FROM t", "postgresql") == "SELECT data #> ? FROM t"
    assert normalize_sql("SELECT arr[1] FROM t WHERE arr[2] = 'x'", "postgresql") == (
        "SELECT arr[?] FROM t WHERE arr[?] = ?"
    )


# --- URLs -----------------------------------------------------------------------------------------


def test_generated_urls_never_leak() -> None:
    rng = random.Random(20261129)
    failures = []
    for _ in range(2000):
        user, password = random_secret(rng), random_url_secret(rng)
        tokens = [random_token(rng), random_token(rng)]
        value, fragment = random_url_secret(rng), random_secret(rng)
        session, bare = random_url_secret(rng), random_token(rng)
        url = (
            f"https://{user}:{password}@api.example.com/api/v2/orders/{tokens[0]}/order-lines/{tokens[1]}"
            f"/cart;jsessionid={session}/by-name?token={value}&page=2&{bare}&x={value}"
            f"#{fragment}"
        )
        template = url_template(url)
        secrets = (user, password, *tokens, value, fragment, session, bare)
        skeleton = url
        for secret in secrets:
            skeleton = skeleton.replace(secret, " ")
        leaks = [leak for secret in secrets if (leak := leaked(secret, template, skeleton))]
        expected = "https://api.example.com/api/v2/orders/{id}/order-lines/{id}/cart/by-name?"
        if leaks or not template.startswith(expected) or "page=" not in template:
            failures.append((url, template, leaks))
    assert not failures, f"{len(failures)} of 2000 leaked, e.g. {failures[:3]}"


@pytest.mark.parametrize(
    "segment",
    [
        "ghp_AbCdEfGhIjKlMnOp",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "sk_live_abcdefghijklmnop",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "xoxb-abcdefghijklmnop",
        "AKIAIOSFODNN7EXAMPLE",
        "glpat-abcdefghijklmnopqrst",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "QkZxvbnmTplkwe",
        "aGVsbG8gd29ybGQ",
        "kdjfhqwuepzmxncbvlaskd",
        "getUserInfo",
    ],
)
def test_token_like_path_segments_become_id(segment: str) -> None:
    assert url_template(f"https://x.test/reset/{segment}/confirm") == "https://x.test/reset/{id}/confirm"
    assert path_template(f"reset/{segment}") == "/reset/{id}"


@pytest.mark.parametrize(
    "segment",
    [
        "orders",
        "order-lines",
        "v2",
        "api",
        "by-name",
        "Orders",
        "index.html",
        ".well-known",
        "my_file.txt",
        "2fa",
    ],
)
def test_route_words_stay_readable(segment: str) -> None:
    assert url_template(f"https://x.test/{segment}/42") == f"https://x.test/{segment}/{{id}}"


def test_query_keys_kept_when_they_are_names() -> None:
    template = url_template("https://x.test/s?filter[name]=a&ids[]=1&X-Amz-Signature=abc&QkZxvbnmTplkwe=1&=z")
    assert template == "https://x.test/s?=&X-Amz-Signature=&filter[name]=&ids[]=&{id}="
