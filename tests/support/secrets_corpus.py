"""The scrubbing corpus: SQL statements and URLs carrying distinctive secrets (`Zq…` values, API
tokens, passwords in URLs, literals in every form each dialect writes), and `leaked`, which says
whether a secret (or a 6-character piece of it) survived into a text.

Shared by the normaliser's unit tests (tests/unit/test_scrubbing.py), the alert rendering's
(tests/unit/test_scrubbing_alerts.py) and the analyzer end to end (tests/e2e/test_analyzer_scrubbing.py).
"""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

FRAGMENT = 6
_ALNUM = string.ascii_letters + string.digits
_BASE64URL = _ALNUM + "-_"


def leaked(secret: str, template: str, skeleton: str) -> str | None:
    """The secret, or a 6+ character piece of it, found in the template (case-insensitive).

    A piece that the statement's own text carries without any secret (`select`, a column name)
    is not a leak."""
    secret, template, skeleton = secret.lower(), template.lower(), skeleton.lower()
    if secret in template:
        return secret
    for i in range(len(secret) - FRAGMENT + 1):
        piece = secret[i : i + FRAGMENT]
        if piece in template and piece not in skeleton:
            return piece
    return None


# --- secrets --------------------------------------------------------------------------------------

_SYLLABLES = ["ba", "ko", "mi", "ra", "lu", "ne", "to", "si", "da", "pe", "vo", "ha", "ri", "nu", "le"]
_WORDS = ["password", "hunter", "secret", "admin", "orders", "select", "where", "token", "users", "from"]


def random_secret(rng: random.Random) -> str:
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
    literals = [
        rng.choice(FORMS[dialect])(rng, random_secret(rng)) for _ in set(re.findall(r"\{\d\}", shape.sql))
    ]
    secrets = tuple(literal.secret for literal in literals)
    statement = shape.sql.format(*(literal.text for literal in literals))
    twin: str | None = shape.sql.format(
        *(
            literal.text.replace(literal.secret, random_secret(rng))
            if literal.secret[:2] in ("Zq", "zq")
            else literal.text
            for literal in literals
        )
    )
    parameterized = shape.sql.format(*(literal.placeholder for literal in literals))
    skeleton = shape.sql.format(*(" " for _ in literals))
    if rng.random() < 0.3:
        secret = random_secret(rng)
        secrets += (secret,)
        comment = _comment(rng, dialect, secret)
        at_end = comment.startswith(("--", "#")) or rng.random() < 0.5
        statement = f"{statement} {comment}" if at_end else f"{comment} {statement}"
        twin = None
    if rng.random() < 0.1:
        # Cut short by the instrumentation: the statement ends inside a literal or comment.
        secret = rng.choice(secrets)
        at = statement.find(secret)
        statement = statement[: at + rng.randint(FRAGMENT, len(secret))]
        return Case(dialect, statement, secrets, skeleton, None, None, (), cut=True)
    if "\\" in statement:
        # Read with and without backslash escapes: what follows such a literal may go too.
        return Case(dialect, statement, secrets, skeleton, twin, None, ())
    return Case(dialect, statement, secrets, skeleton, twin, parameterized, shape.names)


def make_corpus(seed: int = 20261129, per_dialect: int = 800) -> list[Case]:
    rng = random.Random(seed)
    return [_case(rng, dialect) for dialect in FORMS for _ in range(per_dialect)]


CORPUS = make_corpus()


# --- URLs -----------------------------------------------------------------------------------------


def random_token(rng: random.Random) -> str:
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


def random_url_secret(rng: random.Random) -> str:
    return random_secret(rng) if rng.random() < 0.5 else random_token(rng)
