"""Phone numbers as they reach a PBX: normalise every spelling, classify caller IDs, place consumers.

The French plan is matched on national digits ("0" + the national significant number) whatever
country code the number came with (docs/rules.md, "Caller ID": a choice), so the ranges below are
written exactly as ARCEP writes them. `phonenumbers` parses international forms and validates
foreign numbers; the overseas prefixes are ours because the library misplaces several of them.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers

from npv_guard.core import territories as t

# Longer than any E.164 number plus the usual decorations: past this, nothing is a phone number,
# and nothing longer reaches the parser.
MAX_RAW_LENGTH = 256
_MAX_DIGITS = 17


class NumberKind(StrEnum):
    """What a number is, as far as the French rules care."""

    MASKED = "masked"
    INVALID = "invalid"
    NPV_METROPOLITAN = "npv_metropolitan"
    NPV_OVERSEAS = "npv_overseas"
    PLATFORM = "platform"  # 0937-0939: exchanges with a technical platform (NPUEPT)
    MOBILE = "mobile"
    PREMIUM_OR_SHORT = "premium_or_short"
    SPECIAL = "special"  # 080-088 non-geographic service numbers
    GEOGRAPHIC = "geographic"  # ordinary 01-05 and overseas fixed lines
    NON_GEOGRAPHIC = "non_geographic"  # ordinary 09
    FOREIGN = "foreign"


# National-digit prefixes of the NPV ranges (ARCEP 2022-1583), with the territory of the
# overseas ones; the territory rows (core/territories.py) hold them.
NPV_METROPOLITAN_PREFIXES = t.METROPOLE.npv_prefixes
NPV_OVERSEAS_PREFIXES = t.NPV_OVERSEAS_PREFIXES
PLATFORM_PREFIXES = ("0937", "0938", "0939")

# Overseas national prefixes, from the territory rows. Longest match wins.
_OVERSEAS_PREFIXES: dict[str, tuple[tuple[t.Territory, ...], NumberKind]] = {
    prefix: (places, NumberKind(line.value)) for prefix, (places, line) in t.OVERSEAS_PREFIXES.items()
}
# Prefix lookups by length, longest first: a dict probe per length instead of a scan of every prefix.
_OVERSEAS_LENGTHS = tuple(sorted({len(p) for p in _OVERSEAS_PREFIXES}, reverse=True))
_NPV_OVERSEAS_LENGTHS = tuple(sorted({len(p) for p in NPV_OVERSEAS_PREFIXES}, reverse=True))

_MASKED_WORDS = frozenset(
    {
        "", "anonymous", "anonyme", "restricted", "private", "privé", "prive", "withheld",
        "unknown", "unavailable", "masqué", "masque", "hidden", "none", "null", "-", "p",
        "o", "asterisk", "s",
    }
)  # fmt: skip
_SEPARATORS = re.compile(r"[\s.\-()/\u00a0\u2009\u202f]+")
_SIP_URI = re.compile(r"^(?:sips?|tel):", re.IGNORECASE)
_ANGLE = re.compile(r"<([^<>]*)>")


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A number placed in the plan. `national` is set for numbers of the French plan."""

    raw: str
    kind: NumberKind
    e164: str | None = None
    national: str | None = None
    territories: tuple[t.Territory, ...] = ()
    problem: str | None = None  # why it is masked or invalid

    @property
    def is_npv(self) -> bool:
        return self.kind in (NumberKind.NPV_METROPOLITAN, NumberKind.NPV_OVERSEAS)


def _user_part(raw: str) -> str:
    """The dialable part of a caller ID as a PBX may hand it over: URI, name-addr or plain."""
    text = raw.strip()
    angle = _ANGLE.search(text)
    if angle:  # '"Display" <sip:user@host>' and P-Asserted-Identity values
        text = angle.group(1).strip()
    if _SIP_URI.match(text):
        scheme, _, rest = text.partition(":")
        user = rest if scheme.lower() == "tel" else rest.split("@", 1)[0]
        text = user.split(";", 1)[0]
    return text


def parse(raw: str | None) -> PhoneNumber:
    """Normalise one number from any spelling a dialer or carrier may use. Never raises."""
    if type(raw) is str and len(raw) <= MAX_RAW_LENGTH:
        return _parse_cached(raw)
    return _parse(raw)


# A call centre's caller IDs are a few spellings of a few NPVs: each is parsed once (a quarter of
# a decision's CPU was parsing). The result is immutable and a function of the string alone.
@lru_cache(maxsize=4096)
def _parse_cached(raw: str) -> PhoneNumber:
    return _parse(raw)


def _parse(raw: str | None) -> PhoneNumber:
    source = "" if raw is None else str(raw)
    if len(source) > MAX_RAW_LENGTH:
        return PhoneNumber(source[:32] + "…", NumberKind.INVALID, problem="far too long for a phone number")
    # The spellings of nearly every lead and call ("0612345678", "06 12 34 56 78", "+33612345678",
    # "0033612345678"): ASCII digits, spaces and one leading plus are neither a URI, nor a name-addr,
    # nor a masked word, and the separators below would only have removed the spaces.
    compact = source.replace(" ", "")
    if compact.isascii() and (compact.isdigit() or (compact[:1] == "+" and compact[1:].isdigit())):
        return _compact(source, compact)
    return _any_spelling(source)


def _any_spelling(source: str) -> PhoneNumber:
    """`parse` of any spelling: a URI or name-addr, a masked word, every separator."""
    user = _user_part(source)
    if user.strip().lower() in _MASKED_WORDS:
        return PhoneNumber(source, NumberKind.MASKED, problem="empty, anonymous or withheld")
    return _compact(source, _SEPARATORS.sub("", user))


def _compact(source: str, compact: str) -> PhoneNumber:
    """Classify a number without its separators (`source`: as it was given)."""
    if compact.startswith("+"):
        digits, international = compact[1:], True
    elif compact.startswith("00"):
        digits, international = compact[2:], True
    else:
        digits, international = compact, False
    if not digits.isascii() or not digits.isdigit():
        return PhoneNumber(source, NumberKind.INVALID, problem="contains characters that are not digits")
    if len(digits) > _MAX_DIGITS:
        return PhoneNumber(source, NumberKind.INVALID, problem="too many digits")
    if not international:
        if len(digits) == 10 and digits[0] == "0":
            return _national(source, digits, None)
        # Carriers often send E.164 without the plus in SIP user parts.
        if _french_country_code(digits) is not None:
            international = True
        elif 2 <= len(digits) <= 6:
            return PhoneNumber(source, NumberKind.PREMIUM_OR_SHORT, national=digits, territories=(t.METROPOLE,))
        else:
            return PhoneNumber(source, NumberKind.INVALID, problem="not a French national number")
    return _international(source, digits)


# French country codes by their digits. None of their own leading digits ("3", "5", "59", "2", "26")
# is a country code, so a number starting with them has exactly that country code.
_FRENCH_COUNTRY_CODES = {str(cc): cc for cc in t.COUNTRY_CODES}


def _international(source: str, digits: str) -> PhoneNumber:
    # The common case, a French country code and nine national digits not starting with 0, splits
    # exactly as phonenumbers splits it (no national prefix to strip, no leading zero to keep), at a
    # fraction of the cost of its general parser. Everything else goes to the library.
    cc = _french_country_code(digits)
    if cc is not None and digits[len(str(cc))] != "0":
        return _national(source, "0" + digits[len(str(cc)) :], t.COUNTRY_CODES[cc])
    return _international_by_library(source, digits)


def _french_country_code(digits: str) -> int | None:
    """The French country code `digits` opens with, when nine national digits follow it."""
    code = digits[:2] if digits.startswith("33") else digits[:3]
    cc = _FRENCH_COUNTRY_CODES.get(code)
    return cc if cc is not None and len(digits) == len(code) + 9 else None


def _international_by_library(source: str, digits: str) -> PhoneNumber:
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return PhoneNumber(source, NumberKind.INVALID, problem="unknown country code")
    cc, nsn = parsed.country_code, str(parsed.national_number)
    if parsed.italian_leading_zero:
        nsn = "0" * max(parsed.number_of_leading_zeros or 1, 1) + nsn
    if cc in t.COUNTRY_CODES:
        if len(nsn) != 9:
            return PhoneNumber(source, NumberKind.INVALID, problem="wrong length for a French number")
        return _national(source, "0" + nsn, t.COUNTRY_CODES[cc])
    if cc == t.SAINT_PIERRE.country_code:  # its own six-digit plan
        if len(nsn) != 6 or not phonenumbers.is_valid_number(parsed):
            return PhoneNumber(source, NumberKind.INVALID, problem="not a Saint-Pierre-et-Miquelon number")
        return PhoneNumber(source, NumberKind.GEOGRAPHIC, e164=f"+{cc}{nsn}", territories=(t.SAINT_PIERRE,))
    if not phonenumbers.is_valid_number(parsed):
        return PhoneNumber(source, NumberKind.INVALID, problem="not a valid number in its country")
    return PhoneNumber(source, NumberKind.FOREIGN, e164=f"+{cc}{nsn}")


def _longest(national: str, lengths: tuple[int, ...], prefixes: Container[str]) -> str | None:
    """The longest of `prefixes` that `national` starts with (`lengths`: theirs, longest first)."""
    for length in lengths:
        prefix = national[:length]
        if prefix in prefixes:
            return prefix
    return None


def _national(source: str, national: str, by_country_code: tuple[t.Territory, ...] | None) -> PhoneNumber:
    """Classify ten national digits; `by_country_code` is what the country code alone implied."""
    if national[1] == "0":
        return PhoneNumber(source, NumberKind.INVALID, problem="no French number starts with 00 nationally")
    kind: NumberKind
    places: tuple[t.Territory, ...]
    overseas = _longest(national, _OVERSEAS_LENGTHS, _OVERSEAS_PREFIXES)
    npv_overseas = _longest(national, _NPV_OVERSEAS_LENGTHS, NPV_OVERSEAS_PREFIXES)
    if npv_overseas:
        kind, places = NumberKind.NPV_OVERSEAS, NPV_OVERSEAS_PREFIXES[npv_overseas]
    elif national.startswith(NPV_METROPOLITAN_PREFIXES):
        kind, places = NumberKind.NPV_METROPOLITAN, (t.METROPOLE,)
    elif overseas:
        places, kind = _OVERSEAS_PREFIXES[overseas]
    elif national.startswith(PLATFORM_PREFIXES):
        kind, places = NumberKind.PLATFORM, (t.METROPOLE,)
    elif national.startswith("089"):
        kind, places = NumberKind.PREMIUM_OR_SHORT, (t.METROPOLE,)
    elif national.startswith("08"):
        kind, places = NumberKind.SPECIAL, (t.METROPOLE,)
    elif national.startswith(("06", "07")):
        kind, places = NumberKind.MOBILE, (t.METROPOLE,)
    elif national.startswith("09"):
        kind, places = NumberKind.NON_GEOGRAPHIC, (t.METROPOLE,)
    else:
        kind, places = NumberKind.GEOGRAPHIC, (t.METROPOLE,)
    # Overseas numbers that arrive under their own country code but outside our table (new 09
    # ranges, say) are in that territory, not in metropolitan France.
    if places == (t.METROPOLE,) and by_country_code and t.METROPOLE not in by_country_code:
        places = by_country_code
    cc = places[0].country_code
    return PhoneNumber(source, kind, e164=f"+{cc}{national[1:]}", national=national, territories=places)
