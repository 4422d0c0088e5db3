"""No literal from SQL or a URL ever leaves in a template: a seeded corpus per dialect, every literal form.

Templates go into alert titles, JSON details, webhooks and OTLP alert spans. Each generated statement
embeds distinctive secrets (`Zq…`, random or word-like) in one literal form; the template must carry
neither the secret nor any 6-character piece of it, and must stay useful: the same statement with
other values gives the same template, and table and column names survive.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from otel_perf.processors.normalize import normalize_sql, path_template, url_template

_FRAGMENT = 6
_ALNUM = string.ascii_letters + string.digits
_BASE64URL = _ALNUM + "-_"


def _leaked(secret: str, template: str, skeleton: str) -> str | None:
    """The secret, or a 6+ character piece of it, found in the template (case-insensitive).

    A piece that the statement's own text carries without any secret (`select`, a column name)
    is not a leak."""
    secret, template, skeleton = secret.lower(), template.lower(), skeleton.lower()
    if secret in template:
        return secret
    for i in range(len(secret) - _FRAGMENT + 1):
        piece = secret[i : i + _FRAGMENT]
        if piece in template and piece not in skeleton:
            return piece
    return None


# --- secrets --------------------------------------------------------------------------------------

_SYLLABLES = ["ba", "ko", "mi", "ra", "lu", "ne", "to", "si", "da", "pe", "vo", "ha", "ri", "nu", "le"]
_WORDS = ["password", "hunter", "secret", "admin", "orders", "select", "where", "token", "users", "from"]


def _secret(rng: random.Random) -> str:
    """A distinctive value: random, pronounceable, or a real word behind the `Zq` marker."""
    kind = rng.randrange(4)
    if kind == 0:
        return "Zq" + "".join(rng.choice(_ALNUM) for _ in range(rng.randint(8, 18)))
    if kind == 1:
        return "Zq" + "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(3, 6)))
    if kind == 2:
        return "zq" + rng.choice(_WORDS) + rng.choice(_WORDS)
    return "Zq" + rng.choice(_WORDS).capitalize() + str(rng.randint(0, 99))


# Inside a string anything goes, including what is SQL syntax outside one.
_NOISE = [" ", "-", "--", "/*", "*/", "$", "$$", ":name", "?", "%s", "%(x)s", "$1", "#", "# ", ";", "(", ")"]
_NOISE += [",", "\n", ".", "[", "]", "`", "'", '"', "e", "N", "0x1", "1.5", "FROM", "AS"]


def _noise(rng: random.Random) -> str:
    return "".join(rng.choice(_NOISE) for _ in range(rng.randint(0, 6)))


def _word_noise(rng: random.Random) -> str:
    return rng.choice(["", " ", "it''s ", "a b ", "x"])


# --- literal forms --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    text: str  # how it is written in the statement
    secret: str  # what must not survive
    placeholder: str = "?"  # what it templates to, as in the same statement with a bind parameter


Form = Callable[[random.Random, str], Literal]


def _single(rng: random.Random, secret: str) -> Literal:
    body = _noise(rng) + secret + _noise(rng)
    return Literal("'" + body.replace("'", "''") + "'", secret)


def _doubled_quote(rng: random.Random, secret: str) -> Literal:
    return Literal(f"'it''s {secret}''s'", secret)


def _double(rng: random.Random, secret: str) -> Literal:
    body = _noise(rng) + secret + _noise(rng)
    return Literal('"' + body.replace('"', '""') + '"', secret)


def _double_word(rng: random.Random, secret: str) -> Literal:
    # Identifier-shaped: the form the old rule kept.
    return Literal(f'"{secret}"', secret)


def _backslash(rng: random.Random, secret: str) -> Literal:
    return Literal(rng.choice([f"'it\\'s {secret}'", f"'{secret}\\\\'", f"'a\\\\\\'{secret}'"]), secret)


def _double_backslash(rng: random.Random, secret: str) -> Literal:
    return Literal(f'"say \\"{secret}\\" now"', secret)


def _windows_path(rng: random.Random, secret: str) -> Literal:
    # Standard SQL: the backslash is a plain character, the string ends at the quote after it.
    return Literal(f"'C:\\temp\\{secret}\\'", secret)


def _e_string(rng: random.Random, secret: str) -> Literal:
    return Literal(rng.choice([f"E'{secret}'", f"E'it\\'s {secret}'", f"e'\\x41{secret}\\n'"]), secret)


def _n_string(rng: random.Random, secret: str) -> Literal:
    return Literal(f"N'{_word_noise(rng)}{secret}'", secret)


def _unicode_string(rng: random.Random, secret: str) -> Literal:
    return Literal(f"U&'{secret}'", secret, "U&?")


def _introducer(rng: random.Random, secret: str) -> Literal:
    charset = rng.choice(["_utf8", "_utf8mb4", "_latin1", "_binary"])
    return Literal(f"{charset}'{secret}'", secret, f"{charset}?")


def _dollar(rng: random.Random, secret: str) -> Literal:
    tag = rng.choice(["", "tag", "q1", "_x", "body"])
    body = (_noise(rng) + secret + _noise(rng)).replace(f"${tag}$", "").rstrip("$")
    return Literal(f"${tag}${body}${tag}$", secret)


def _hex_string(rng: random.Random, secret: str) -> Literal:
    digits = "".join(rng.choice("0123456789ABCDEF") for _ in range(rng.choice([12, 16, 24])))
    return Literal(f"{rng.choice('Xx')}'{digits}'", digits)


def _hex_number(rng: random.Random, secret: str) -> Literal:
    digits = "".join(rng.choice("0123456789abcdef") for _ in range(rng.choice([12, 16, 24])))
    return Literal(f"0x{digits}", digits)


def _hex_number_pg16(rng: random.Random, secret: str) -> Literal:
    digits = "".join(rng.choice("0123456789ABCDEF") for _ in range(12))
    return Literal(f"0X{digits[:6]}_{digits[6:]}", f"{digits[:6]}_{digits[6:]}")


def _binary(rng: random.Random, secret: str) -> Literal:
    bits = "1" + "".join(rng.choice("01") for _ in range(23))
    return Literal(rng.choice([f"B'{bits}'", f"b'{bits}'", f"0b{bits}"]), bits)


def _number(rng: random.Random, secret: str) -> Literal:
    digits = str(rng.randint(100_000, 10**12))
    text = rng.choice(
        [
            digits,
            f"-{digits}",
            f"{digits[:3]}.{digits[3:]}",
            f".{digits}",
            f"{digits}.",
            f"{digits}e10",
            f"{digits[:2]}.{digits[2:]}E-3",
            f"{digits}E+7",
            f"-{digits[:1]}.{digits[1:]}e-12",
        ]
    )
    return Literal(text, text)


def _underscored_number(rng: random.Random, secret: str) -> Literal:
    digits = str(rng.randint(100_000_000, 999_999_999))
    text = f"{digits[:3]}_{digits[3:6]}_{digits[6:]}"
    return Literal(text, text)


def _json_in_string(rng: random.Random, secret: str) -> Literal:
    age = rng.randint(100_000, 999_999)
    doc = rng.choice(
        [
            f'{{"name": "{secret}", "age": {age}}}',
            f'{{"user": {{"token": "{secret}"}}, "tags": ["a", "b"]}}',
            f'["{secret}", {age}, null, true]',
        ]
    )
    return Literal("'" + doc + "'", secret)


def _like(rng: random.Random, secret: str) -> Literal:
    return Literal(rng.choice([f"'%{secret}%'", f"'{secret}_%'", f"'[a-z]{secret}%'"]), secret)


_COMMON: list[Form] = [_single, _doubled_quote, _backslash, _windows_path, _hex_string, _number]
_COMMON += [_json_in_string, _like]
FORMS: dict[str, list[Form]] = {
    "sqlite": [*_COMMON, _double, _double_word, _hex_number],
    "postgresql": [*_COMMON, _e_string, _n_string, _unicode_string, _dollar, _binary, _underscored_number],
    "mysql": [
        *_COMMON,
        _double,
        _double_word,
        _double_backslash,
        _n_string,
        _introducer,
        _binary,
        _hex_number,
    ],
    "mssql": [*_COMMON, _double, _double_word, _n_string, _hex_number],
}
FORMS["postgresql"].append(_hex_number_pg16)


# --- statement shapes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    sql: str  # `{0}`, `{1}`, `{2}`: literal slots
    names: tuple[str, ...]  # identifiers that must survive in the template


def _shapes(dialect: str) -> list[Shape]:
    # How an ORM quotes a reserved word in each dialect.
    order, user = ({"mysql": f"`{n}`", "mssql": f"[{n}]"}.get(dialect, f'"{n}"') for n in ("order", "user"))
    return [
        Shape(
            f"SELECT {order}.id, {order}.status FROM {order}"
            f" WHERE {order}.note = {{0}} AND {order}.id = {{1}}",
            (f"{order}.id", f"{order}.status", f"FROM {order}", f"{order}.note"),
        ),
        Shape(
            "UPDATE accounts SET balance = {0}, note = {1} WHERE accounts.account_id = {2}",
            ("UPDATE accounts SET balance", "note", "accounts.account_id"),
        ),
        Shape(
            "INSERT INTO order_lines (order_id, sku, price) VALUES ({0}, {1}, {2})",
            ("INSERT INTO order_lines (order_id, sku, price) VALUES (",),
        ),
        Shape(
            f"SELECT {user}.name FROM {user} WHERE {user}.email IN ({{0}}, {{1}}, {{2}})"
            f" ORDER BY {user}.created_at",
            (f"{user}.name", f"FROM {user}", f"{user}.email IN (", f"ORDER BY {user}.created_at"),
        ),
        Shape(
            "SELECT p.id FROM products p JOIN stock s ON s.product_id = p.id"
            " WHERE p.title LIKE {0} AND s.qty > {1}",
            ("p.id", "products p", "JOIN stock s ON s.product_id = p.id", "p.title LIKE", "s.qty >"),
        ),
        Shape(
            "DELETE FROM sessions WHERE sessions.token = {0} OR sessions.expires < {1}",
            ("DELETE FROM sessions", "sessions.token", "sessions.expires"),
        ),
        Shape(
            "SELECT count(*) AS count_1 FROM events WHERE events.payload = {0} AND events.kind <> {1}",
            ("count(*) AS count_1", "FROM events", "events.payload", "events.kind"),
        ),
    ]


def _comment(rng: random.Random, dialect: str, secret: str) -> str:
    options = [
        f"/* controller=orders,user={secret} */",
        f"/*traceparent='00-{uuid.UUID(int=rng.getrandbits(128)).hex}-01',user='{secret}'*/",
        f"-- note {secret}\n",
        f"/* it's {secret} -- */",
    ]
    if dialect == "mysql":
        options.append(f"# {secret}\n")
    if dialect in ("postgresql", "mssql"):
        options.append(f"/* outer /* inner */ {secret} */")
    return rng.choice(options)


@dataclass(frozen=True)
class Case:
    dialect: str
    statement: str
    secrets: tuple[str, ...]
    skeleton: str  # the statement without its literals and comments
    twin: str | None  # the same statement with other secrets: the template must be equal
    parameterized: str | None  # the same statement with bind parameters: the template must be equal
    names: tuple[str, ...]
    cut: bool = False


def _case(rng: random.Random, dialect: str) -> Case:
    shape = rng.choice(_shapes(dialect))
    literals = [rng.choice(FORMS[dialect])(rng, _secret(rng)) for _ in set(re.findall(r"\{\d\}", shape.sql))]
    secrets = tuple(literal.secret for literal in literals)
    statement = shape.sql.format(*(literal.text for literal in literals))
    twin: str | None = shape.sql.format(
        *(
            literal.text.replace(literal.secret, _secret(rng))
            if literal.secret[:2] in ("Zq", "zq")
            else literal.text
            for literal in literals
        )
    )
    parameterized = shape.sql.format(*(literal.placeholder for literal in literals))
    skeleton = shape.sql.format(*(" " for _ in literals))
    if rng.random() < 0.3:
        secret = _secret(rng)
        secrets += (secret,)
        comment = _comment(rng, dialect, secret)
        at_end = comment.startswith(("--", "#")) or rng.random() < 0.5
        statement = f"{statement} {comment}" if at_end else f"{comment} {statement}"
        twin = None
    if rng.random() < 0.1:
        # Cut short by the instrumentation: the statement ends inside a literal or comment.
        secret = rng.choice(secrets)
        at = statement.find(secret)
        statement = statement[: at + rng.randint(_FRAGMENT, len(secret))]
        return Case(dialect, statement, secrets, skeleton, None, None, (), cut=True)
    if "\\" in statement:
        # Read with and without backslash escapes: what follows such a literal may go too.
        return Case(dialect, statement, secrets, skeleton, twin, None, ())
    return Case(dialect, statement, secrets, skeleton, twin, parameterized, shape.names)


def _corpus(seed: int = 20261129, per_dialect: int = 800) -> list[Case]:
    rng = random.Random(seed)
    return [_case(rng, dialect) for dialect in FORMS for _ in range(per_dialect)]


_CORPUS = _corpus()


def test_generated_statements_never_leak_a_literal() -> None:
    failures = []
    for case in _CORPUS:
        template = normalize_sql(case.statement, case.dialect)
        leaks = [leak for secret in case.secrets if (leak := _leaked(secret, template, case.skeleton))]
        if leaks:
            failures.append((case.dialect, case.statement, template, leaks))
    assert not failures, f"{len(failures)} of {len(_CORPUS)} leaked, e.g. {failures[:3]}"


def test_generated_statements_keep_their_shape() -> None:
    failures = []
    for case in _CORPUS:
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
    assert not failures, f"{len(failures)} of {len(_CORPUS)} changed shape, e.g. {failures[:3]}"


def test_corpus_covers_every_form_in_every_dialect() -> None:
    """The generator reaches comments, backslashes and cut statements in each dialect, and each form."""
    for dialect in FORMS:
        cases = [case for case in _CORPUS if case.dialect == dialect]
        assert sum(case.cut for case in cases) > 40
        assert sum(case.parameterized is not None for case in cases) > len(cases) // 2
        for marker in ("/*", "--", "\\", "'it''s", "%'", '{"', "."):
            assert any(marker in case.statement for case in cases), (dialect, marker)
    joined = "\n".join(case.statement for case in _CORPUS)
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


def _token(rng: random.Random) -> str:
    """Something a path segment may carry that is not a route word."""
    body = "".join(rng.choice(_ALNUM) for _ in range(36))
    lower = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(17, 32)))
    b64 = "".join(rng.choice(_BASE64URL) for _ in range(rng.randint(22, 43)))
    return rng.choice(
        [
            "Zq" + "".join(rng.choice(_ALNUM) for _ in range(rng.randint(14, 30))),
            f"ghp_{body}",
            f"gho_{body}",
            f"ghp_{body.lower()}",
            f"github_pat_{body[:22]}_{body}{body[:23]}",
            f"sk_live_{body[:24]}",
            f"sk_test_{body[:24].lower()}",
            f"xoxb-{rng.randint(10**10, 10**11)}-{body[:24]}",
            f"xoxb-{body[:24].lower()}",
            "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
            f"glpat-{body[:20]}",
            f"glpat-{body[:20].lower()}",
            f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{b64}.{b64[::-1]}",
            b64,
            lower,
            "".join(rng.choice("0123456789abcdef") for _ in range(40)),
            str(uuid.UUID(int=rng.getrandbits(128))),
            str(rng.randint(1000, 10**12)),
            f"inv-{rng.randint(2000, 2099)}-{rng.randint(1, 999):03d}",
        ]
    )


def _url_secret(rng: random.Random) -> str:
    return _secret(rng) if rng.random() < 0.5 else _token(rng)


def test_generated_urls_never_leak() -> None:
    rng = random.Random(20261129)
    failures = []
    for _ in range(2000):
        user, password = _secret(rng), _url_secret(rng)
        tokens = [_token(rng), _token(rng)]
        value, fragment, session, bare = _url_secret(rng), _secret(rng), _url_secret(rng), _token(rng)
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
        leaks = [leak for secret in secrets if (leak := _leaked(secret, template, skeleton))]
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
