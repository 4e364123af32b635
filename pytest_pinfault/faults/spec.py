"""The fault-spec grammar: when a site fires and what it does then.

One grammar serves the ``pinfault`` marker, ``--pinfault-faults``, the
``PINFAULT_FAULTS`` environment variable and :meth:`Injector.arm_spec
<pytest_pinfault.faults.injector.Injector.arm_spec>`.  In EBNF (whitespace is allowed
between tokens; ``(* *)`` are comments)::

    specs    = [ spec ] , { ( ";" | newline ) , [ spec ] } ;
    spec     = site , [ "[" , attr , { "," , attr } , "]" ] , "=" , term , { "->" , term } ;
    site     = name ;                                  (* folio_isolate_lru, udmabuf.sg_alloc *)
    name     = ( letter | "_" ) , { letter | digit | "_" | "." } ;
    attr     = filter | control ;                      (* each attribute at most once *)
    filter   = "zone" , "=" , ( "DMA" | "DMA32" | "Normal" | "Movable" )
             | "migratetype" , "=" , ( "Unmovable" | "Movable" | "Reclaimable"
                                     | "HighAtomic" | "CMA" | "Isolate" )
             | "order" , "=" , int
             | "kind" , "=" , name                     (* anon, shmem, hugetlb, file, kernel ... *)
             | "caller" , "=" , name ;                 (* a function on the hit's call stack *)
    control  = "nth" , "=" , int                       (* eligible hits before the Nth never fire *)
             | "every" , "=" , int                     (* only every Kth eligible hit may fire *)
             | "times" , "=" , int ;                   (* at most T firings in all *)
    term     = [ number , "%" ] , [ int , "*" ] , action ;
    action   = "return" , [ "(" , errno , ")" ]        (* fail with the site's errno *)
             | "off"                                   (* do nothing: skip these hits *)
             | "hold" , [ "(" , int , ")" ]            (* short-term reference on ctx folio *)
             | "call" , "(" , name , ")" ;             (* run a registered callable *)
    errno    = [ "-" ] , ( name | int ) ;              (* ENOMEM, -ENOMEM, 12 *)
    int      = digit , { digit } ;                     (* positive: 1 <= n <= MAX_INT *)
    number   = int , [ "." , digit , { digit } ] ;     (* a percentage, 0 <= p <= 100 *)
    digit    = "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" ;
    letter   = "A" .. "Z" | "a" .. "z" ;              (* ASCII only *)

Zone and migratetype names are matched case-insensitively and stored as spelled above.

A hit is *eligible* when every filter matches its context.  The eligible hits are
counted from 1; the eligible hit number ``e`` may fire when ``e >= nth`` and
``e % every == 0`` and fewer than ``times`` firings happened.  Such a hit goes to the
current term of the chain: ``p%`` lets it through with probability p (the injector's
seeded ``random.Random``), and a term with a count ``K*`` is used for K hits that got
through and then the chain moves on to the next term (fail-rs / FreeBSD fail(9)); a term
without a count is used for ever.  When the chain is exhausted the site never fires
again.  ``off`` terms use up hits without firing (they do not count towards ``times``).

Digits and letters are ASCII only: ``²`` or ``١`` are refused like any other stray
character, never read as numbers.  Integers are at most :data:`MAX_INT` (2**63 - 1, the
kernel's ``LLONG_MAX``; larger counts could never be reached anyway).

Errors are :class:`FaultSpecError` (a :class:`ValueError`) with the 1-based column of the
offending token, what was expected there and what was found.
"""

from __future__ import annotations

import dataclasses
import errno as _errno
from typing import Any, Mapping, Union

__all__ = ["FaultSpec", "Term", "FaultSpecError", "parse_spec", "parse_specs", "validate_spec",
           "parse_errno", "ACTIONS", "FILTERS", "CONTROLS", "ZONES", "MIGRATETYPES", "MAX_INT"]

ACTIONS = ("return", "off", "hold", "call")
FILTERS = ("zone", "migratetype", "order", "kind", "caller")
CONTROLS = ("nth", "every", "times")
ZONES = ("DMA", "DMA32", "Normal", "Movable")
MIGRATETYPES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")

_END = "end of spec"

#: The largest integer a spec (nth, every, times, a count, hold(N), order) may carry.
MAX_INT = (1 << 63) - 1
_DIGITS = frozenset("0123456789")


def _isdigit(c: str) -> bool:
    """An ASCII digit (``str.isdigit`` also accepts ``²`` and other scripts' digits,
    which ``int()`` then rejects or reads as numbers)."""
    return c != "" and all(ch in _DIGITS for ch in c)


class FaultSpecError(ValueError):
    """A fault spec that does not parse or does not fit the site catalogue."""

    def __init__(self, spec: str, column: int, expected: str, got: str) -> None:
        self.spec = spec
        self.column = column
        self.expected = expected
        self.got = got
        shown = got if len(got) <= 40 else got[:37] + "..."
        super().__init__(f"bad fault spec {spec!r} at column {column}: expected {expected}, got {shown!r}")


@dataclasses.dataclass(frozen=True)
class Term:
    """One link of a chain: probability in percent (None: always), count (None: for
    ever), action and its argument (``return``: positive errno or None for the site's
    default; ``hold``: attempts or None; ``call``: the callback name; ``off``: None)."""

    prob: float | None
    count: int | None
    action: str
    arg: Union[int, str, None] = None
    column: int = dataclasses.field(default=0, compare=False, repr=False)
    arg_column: int = dataclasses.field(default=0, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    """A parsed spec: the site, its context filters (in the order written), the controls
    (``times`` None = unlimited), the chain of terms and the source text."""

    site: str
    filters: tuple[tuple[str, str], ...] = ()
    nth: int = 1
    every: int = 1
    times: int | None = None
    terms: tuple[Term, ...] = ()
    text: str = ""

    def __str__(self) -> str:
        return self.text


def parse_errno(text: str) -> int | None:
    """``ENOMEM``, ``-ENOMEM``, ``12`` or ``-12`` -> 12; None if it is no errno."""
    t = text.strip()
    if t.startswith("-"):
        t = t[1:].strip()
    if _isdigit(t):
        if len(t) > 4:
            return None
        n = int(t)
        return n if 0 < n < 4096 else None
    if not t.isascii() or not t.isidentifier():
        return None
    code = getattr(_errno, t, None)
    if isinstance(code, int) and t.isupper() and _errno.errorcode.get(code):
        return code
    return None


def errno_name(e: int) -> str:
    return _errno.errorcode.get(abs(e), str(abs(e)))


# ---------------------------------------------------------------------------- scanner
def _is_name_start(c: str) -> bool:
    return c.isascii() and (c.isalpha() or c == "_")


def _is_name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_.")


class _Scanner:
    """Character-level scanner with one-token lookahead over one spec's text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- low level -----------------------------------------------------------------
    def skip_ws(self) -> None:
        t, n = self.text, len(self.text)
        while self.pos < n and t[self.pos] in " \t\r":
            self.pos += 1

    def peek(self) -> str:
        """The next non-blank character ('' at the end)."""
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def lexeme(self) -> str:
        """The token starting at the current position, for error messages."""
        self.skip_ws()
        t, i = self.text, self.pos
        if i >= len(t):
            return _END
        c = t[i]
        if _is_name_char(c):
            j = i
            while j < len(t) and _is_name_char(t[j]):
                j += 1
            return t[i:j]
        if t.startswith("->", i):
            return "->"
        return c

    def fail(self, expected: str, column: int | None = None, got: str | None = None) -> FaultSpecError:
        if column is None:
            got = self.lexeme() if got is None else got
            column = self.pos + 1
        return FaultSpecError(self.text, column, expected, got if got is not None else _END)

    def accept(self, tok: str) -> bool:
        self.skip_ws()
        if self.text.startswith(tok, self.pos):
            self.pos += len(tok)
            return True
        return False

    def expect(self, tok: str, what: str | None = None) -> None:
        if not self.accept(tok):
            raise self.fail(what or repr(tok))

    # -- tokens --------------------------------------------------------------------
    def name(self, what: str) -> tuple[str, int]:
        self.skip_ws()
        t, i = self.text, self.pos
        if i >= len(t) or not _is_name_start(t[i]):
            raise self.fail(what)
        j = i + 1
        while j < len(t) and _is_name_char(t[j]):
            j += 1
        if t[j - 1] == ".":
            raise self.fail(what, column=i + 1, got=t[i:j])
        self.pos = j
        return t[i:j], i + 1

    def number(self, what: str, integer: bool = True) -> tuple[str, int]:
        self.skip_ws()
        t, i = self.text, self.pos
        j = i
        while j < len(t) and _isdigit(t[j]):
            j += 1
        if j == i:
            raise self.fail(what)
        if not integer and j < len(t) and t[j] == "." and j + 1 < len(t) and _isdigit(t[j + 1]):
            j += 1
            while j < len(t) and _isdigit(t[j]):
                j += 1
        if j < len(t) and (_is_name_start(t[j]) or (integer and t[j] == ".") or
                           (t[j].isalnum() and not t[j].isascii())):
            raise self.fail(what, column=i + 1, got=self._word(i))
        self.pos = j
        return t[i:j], i + 1

    def _word(self, i: int) -> str:
        """The run of letters and digits (of any script) from *i*, for messages."""
        t, j = self.text, i
        while j < len(t) and (t[j].isalnum() or t[j] in "_."):
            j += 1
        return t[i:j] or t[i:i + 1]

    def positive(self, what: str) -> int:
        text, col = self.number(what)
        n = _bounded(text)
        if n is None or n < 1:
            raise self.fail(f"{what} (1 to {MAX_INT})" if n is None else what, column=col, got=text)
        return n


def _bounded(text: str) -> int | None:
    """An ASCII digit string as an int, None when above :data:`MAX_INT` (checked on the
    length first: ``int()`` of thousands of digits is slow or refused)."""
    if len(text.lstrip("0")) > 19:
        return None
    n = int(text)
    return n if n <= MAX_INT else None


# ---------------------------------------------------------------------------- parser
def _canonical(value: str, choices: tuple[str, ...]) -> str | None:
    for c in choices:
        if c.lower() == value.lower():
            return c
    return None


def _parse_attr(sc: _Scanner, seen: set[str], out: dict[Any, Any]) -> None:
    what = "an attribute (" + ", ".join(FILTERS + CONTROLS) + ")"
    key, col = sc.name(what)
    if key not in FILTERS and key not in CONTROLS:
        raise sc.fail(what, column=col, got=key)
    if key in seen:
        raise sc.fail(f"each attribute at most once ({key} is given twice)", column=col, got=key)
    seen.add(key)
    sc.expect("=", f"'=' after {key}")
    if key in CONTROLS:
        out[key] = sc.positive(f"a positive integer for {key}")
        return
    if key == "order":
        text, ocol = sc.number("an integer order (0, 1, 9 ...)")
        if _bounded(text) is None:
            raise sc.fail(f"an integer order (0 to {MAX_INT})", column=ocol, got=text)
        out["filters"].append((key, text.lstrip("0") or "0"))
        return
    if key in ("zone", "migratetype"):
        choices = ZONES if key == "zone" else MIGRATETYPES
        what = f"a {key} ({', '.join(choices)})"
        sc.skip_ws()
        vcol = sc.pos + 1
        value, _ = sc.number(what) if _isdigit(sc.peek()) else sc.name(what)
        canon = _canonical(value, choices)
        if canon is None:
            raise sc.fail(what, column=vcol, got=value)
        out["filters"].append((key, canon))
        return
    what = "a folio kind (anon, shmem, hugetlb, file, kernel ...)" if key == "kind" else "a function name"
    value, _ = sc.name(what)
    out["filters"].append((key, value))


def _parse_term(sc: _Scanner) -> Term:
    sc.skip_ws()
    col = sc.pos + 1
    prob: float | None = None
    count: int | None = None
    action_what = "an action (" + ", ".join(ACTIONS) + ")"
    if _isdigit(sc.peek()):
        text, ncol = sc.number("a probability or a count", integer=False)
        nxt = sc.peek()
        if nxt == "%":
            p = float(text) if len(text) <= 64 else float("inf")
            if p > 100:
                raise sc.fail("a percentage between 0 and 100", column=ncol, got=text + "%")
            prob = p
            sc.pos += 1
            if _isdigit(sc.peek()):
                text, ncol = sc.number("a count", integer=False)
                if sc.peek() != "*":
                    raise sc.fail("'*' after the count")
            else:
                text = ""
        elif nxt != "*":
            raise sc.fail("'%' or '*' after a number")
        if text:
            n = _bounded(text) if _isdigit(text) else 0
            if n is None or n < 1:
                what = "a positive integer count" + (f" (1 to {MAX_INT})" if n is None else "")
                raise sc.fail(what, column=ncol, got=text)
            count = n
            sc.pos += 1                                   # the '*'
    action, acol = sc.name(action_what)
    if action not in ACTIONS:
        raise sc.fail(action_what, column=acol, got=action)
    arg: Union[int, str, None] = None
    arg_col = 0
    if sc.peek() == "(":
        if action == "off":
            raise sc.fail("'->', ';' or end of spec (off takes no argument)")
        sc.pos += 1
        sc.skip_ws()
        arg_col = sc.pos + 1
        if action == "return":
            what = "an errno (ENOMEM, -ENOMEM or 12)"
            neg = sc.accept("-")
            sc.skip_ws()
            if _isdigit(sc.peek()):
                text, _ = sc.number(what)
            else:
                text, _ = sc.name(what)
            e = parse_errno(text)
            if e is None:
                raise sc.fail(what, column=arg_col, got=("-" if neg else "") + text)
            arg = e
        elif action == "hold":
            arg = sc.positive("a positive number of migration attempts")
        else:
            arg, _ = sc.name("a callback name")
        sc.expect(")", "')'")
    elif action == "call":
        raise sc.fail("'(' and a callback name after call")
    return Term(prob, count, action, arg, col, arg_col)


def parse_spec(text: str) -> FaultSpec:
    """Parse one spec (see the module docstring); raises :class:`FaultSpecError`."""
    text = text.strip()
    sc = _Scanner(text)
    site, _ = sc.name("a fault site name")
    attrs: dict[Any, Any] = {"filters": []}
    bracket = sc.peek() == "["
    if bracket:
        sc.pos += 1
        seen: set[str] = set()
        _parse_attr(sc, seen, attrs)
        while True:
            c = sc.peek()
            if c == ",":
                sc.pos += 1
                _parse_attr(sc, seen, attrs)
            elif c == "]":
                sc.pos += 1
                break
            else:
                raise sc.fail("',' or ']'")
    if sc.peek() != "=":
        raise sc.fail("'='" if bracket else "'[' or '='")
    sc.pos += 1
    terms = [_parse_term(sc)]
    while True:
        c = sc.peek()
        if c == "":
            break
        if sc.text.startswith("->", sc.pos):
            sc.pos += 2
            terms.append(_parse_term(sc))
            continue
        raise sc.fail("'->' or end of spec")
    return FaultSpec(site, tuple(attrs["filters"]), attrs.get("nth", 1), attrs.get("every", 1),
                     attrs.get("times"), tuple(terms), text)


def parse_specs(text: str) -> list[FaultSpec]:
    """Parse specs separated by ``;`` or newlines (blank entries are ignored)."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        for part in line.split(";"):
            if part.strip():
                out.append(parse_spec(part))
    return out


def validate_spec(spec: FaultSpec, sites: Mapping[str, object]) -> None:
    """Check *spec* against a site catalogue (name -> :class:`~.sites.Site`): the site
    must exist and every ``return(errno)`` must be one the site may produce.  A
    :class:`FaultSpec` built in Python rather than parsed is held to the grammar's ranges
    too (``nth``, ``every``, ``times``, counts and ``hold(N)`` in 1..MAX_INT, a
    probability in 0..100, a known action, at least one term)."""
    _check_fields(spec)
    site = sites.get(spec.site)
    if site is None:
        raise FaultSpecError(spec.text, 1, f"a known fault site ({', '.join(sorted(sites))})", spec.site)
    allowed = tuple(getattr(site, "errnos", ()))
    for term in spec.terms:
        if term.action == "return" and term.arg is not None and term.arg not in allowed:
            names = ", ".join("-" + errno_name(e) for e in allowed)
            raise FaultSpecError(spec.text, term.arg_column or term.column,
                                 f"an errno {spec.site} may return ({names})", "-" + errno_name(int(term.arg)))


def _int_in_range(v: object, lo: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= MAX_INT


def _check_fields(spec: FaultSpec) -> None:
    """The grammar's ranges on a FaultSpec that may not have come from the parser."""
    text = spec.text or str(spec.site)
    if not isinstance(spec, FaultSpec):
        raise FaultSpecError(str(spec), 1, "a FaultSpec", type(spec).__name__)
    if not isinstance(spec.site, str) or not spec.site:
        raise FaultSpecError(text, 1, "a fault site name", repr(spec.site))
    for name in ("nth", "every"):
        if not _int_in_range(getattr(spec, name)):
            raise FaultSpecError(text, 1, f"{name} an integer from 1 to {MAX_INT}", repr(getattr(spec, name)))
    if spec.times is not None and not _int_in_range(spec.times):
        raise FaultSpecError(text, 1, f"times None (unlimited) or an integer from 1 to {MAX_INT}",
                             repr(spec.times))
    for f in spec.filters:
        if not (isinstance(f, tuple) and len(f) == 2 and f[0] in FILTERS and isinstance(f[1], str)):
            raise FaultSpecError(text, 1, f"filters as (name, value) pairs with a name from "
                                 f"{', '.join(FILTERS)}", repr(f))
    if not spec.terms:
        raise FaultSpecError(text, len(text) + 1, "at least one term (an action)", _END)
    for t in spec.terms:
        col = getattr(t, "column", 0) or 1
        if not isinstance(t, Term) or t.action not in ACTIONS:
            raise FaultSpecError(text, col, f"a Term with an action ({', '.join(ACTIONS)})", repr(t))
        if t.prob is not None and (isinstance(t.prob, bool) or not isinstance(t.prob, (int, float))
                                   or not 0 <= t.prob <= 100):
            raise FaultSpecError(text, col, "a percentage between 0 and 100", repr(t.prob))
        if t.count is not None and not _int_in_range(t.count):
            raise FaultSpecError(text, col, f"a count from 1 to {MAX_INT}", repr(t.count))
        if t.action == "hold" and t.arg is not None and not _int_in_range(t.arg):
            raise FaultSpecError(text, col, f"hold attempts from 1 to {MAX_INT}", repr(t.arg))
        if t.action == "return" and t.arg is not None and not _int_in_range(t.arg):
            raise FaultSpecError(text, col, "a positive errno", repr(t.arg))
        if t.action == "call" and not isinstance(t.arg, str):
            raise FaultSpecError(text, col, "a callback name", repr(t.arg))
