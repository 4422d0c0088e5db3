"""Turn SQL statements and URLs into templates without literals.

Two statements that differ only in their literals are the same query in a loop; the template is
also what leaves the process in alerts, so it must never carry a literal (a password in a WHERE
clause, a token in a query string). Both functions are cached per distinct input: ORM statements
repeat verbatim, so the regexes run once per statement, not once per span.

Hand-written because no maintained library does literal-stripping that is both dialect-agnostic
and fast enough for the span path (sqlparse tokenises the whole statement, ~100x slower).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

# One left-to-right scan, so a comment marker inside a string (or a quote inside a comment) is
# read as part of what encloses it. Unterminated strings and comments (a statement cut short by
# the instrumentation) run to the end: better a lost tail than a leaked literal.
_SQL_TOKEN = re.compile(
    r"""
      (?P<comment> /\*.*?(?:\*/|\Z) | --[^\n]* )
    | (?P<quoted> "(?:[^"]|"")*(?:"|\Z) )          # identifier in standard SQL, string in MySQL
    | (?P<literal>
          [EeNnBbXx]?'(?:[^']|'')*(?:'|\Z)            # string, with '' escapes and prefixes
        | \$(?P<tag>[A-Za-z_]*)\$.*?(?:\$(?P=tag)\$|\Z)  # dollar-quoted string
        | \b0[xX][0-9a-fA-F]+\b                      # hex number
        | (?<![\w$.])-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w)  # number, not in an identifier
        | %\(\w+\)s | %s                               # pyformat / format params
        | (?<!:):\w+                                   # named params (:id), not ::casts
        | \$\d+                                        # numbered params ($1)
        | \?                                           # qmark params
      )
    """,
    re.VERBOSE | re.DOTALL,
)
_SQL_PARAM_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_SQL_REPEATED_ROWS = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")
_SQL_SPACE = re.compile(r"\s+")
_IDENTIFIER = re.compile(r'"[A-Za-z_][A-Za-z0-9_ .]{0,62}"')

_MAX_STATEMENT_CHARS = 2000


def _replace_token(match: re.Match[str]) -> str:
    if match.group("comment") is not None:
        return " "
    quoted = match.group("quoted")
    if quoted is not None:
        # Keep short identifier-like ones ("users"."id"), drop the rest as literals.
        return quoted if _IDENTIFIER.fullmatch(quoted) else "?"
    return "?"


@lru_cache(maxsize=8192)
def normalize_sql(statement: str) -> str:
    """`SELECT * FROM t WHERE id = 42 AND x IN (1,2,3)` → `SELECT * FROM t WHERE id = ? AND x IN (?)`."""
    text = _SQL_TOKEN.sub(_replace_token, statement[: _MAX_STATEMENT_CHARS * 4])
    text = _SQL_SPACE.sub(" ", text).strip()
    # Collapse IN-lists and multi-row VALUES after literals became "?": (?, ?, ?) → (?).
    text = _SQL_PARAM_LIST.sub("(?)", text)
    text = _SQL_REPEATED_ROWS.sub("(?)", text)
    if len(text) > _MAX_STATEMENT_CHARS:
        text = text[:_MAX_STATEMENT_CHARS] + "…"
    return text


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START TRANSACTION", "SET ")


def is_transaction_control(template: str) -> bool:
    """Statements that frame work rather than do it: never an N+1 on their own."""
    return template.upper().startswith(_TRANSACTION_CONTROL)


_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_HEXISH = re.compile(r"[0-9a-fA-F]{16,}")
_NUMERIC = re.compile(r"[-+]?\d+(?:\.\d+)?")
_DIGITS = re.compile(r"\d")
_EMAILISH = re.compile(r"[^/@]+@[^/@]+")


def _template_segment(segment: str) -> str:
    # Path parameters (`cart;jsessionid=…`) carry session tokens: keep the name only.
    segment = segment.split(";", 1)[0]
    if not segment:
        return segment
    if (
        _NUMERIC.fullmatch(segment)
        or _UUID.fullmatch(segment)
        or _HEXISH.fullmatch(segment)
        or _EMAILISH.fullmatch(segment)
        or len(_DIGITS.findall(segment)) >= 3
    ):
        return "{id}"
    return segment


@lru_cache(maxsize=8192)
def url_template(url: str) -> str:
    """`https://u:p@api.x/orders/42/items?token=abc` → `https://api.x/orders/{id}/items?token=`.

    Drops credentials, fragment and every query value; replaces id-like path segments.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "{invalid-url}"
    path = "/".join(_template_segment(segment) for segment in parts.path.split("/"))
    query = ""
    if parts.query:
        keys = sorted({pair.split("=", 1)[0] for pair in parts.query.split("&") if pair})
        query = "?" + "&".join(f"{_template_segment(key)}=" for key in keys)
    authority = f"{host}:{port}" if port else host
    prefix = f"{parts.scheme}://{authority}" if parts.scheme else authority
    return f"{prefix}{path or '/'}{query}"


def path_template(path: str) -> str:
    """A bare path (`/orders/42`) templated like a URL's path."""
    return url_template(path if path.startswith("/") else "/" + path)
