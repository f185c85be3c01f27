"""What a text message says, read without I/O: its addresses, its declared sector, STOP. Whether
its body can go is a rule of the core (core/message.py)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Asterisk hands messages over with SIP URIs in the From and To ("pjsip:" for the To), with or
# without a display name and angle brackets: the user part is the number.
_USER = re.compile(r"(?:pjsip|sips?|tel):([^@;>\s]{1,64})", re.IGNORECASE)
MAX_ADDRESS = 512


def address_number(address: object) -> str:
    """The number in a message address ("" when there is none: the core then rejects it)."""
    if not isinstance(address, str):
        return ""
    match = _USER.search(address[:MAX_ADDRESS])
    return match.group(1) if match else ""


SECTOR_HEADER = "X-NPV-Sector"
_SECTOR_CHARS = re.compile(r"[^0-9A-Za-z._+\-]")


def declared_sector(variables: object) -> str | None:
    """The campaign's sector the platform declared in the MESSAGE's `X-NPV-Sector` header.

    res_pjsip_messaging copies every header of an incoming MESSAGE into the message's variables,
    which ARI passes on in `TextMessageReceived` as `variables` (an object; a list of key/value
    pairs is read too). Stripped to the characters the dialplan lets through for calls.
    """
    items: list[tuple[object, object]] = []
    if isinstance(variables, dict):
        items = list(variables.items())
    elif isinstance(variables, list):
        items = [(v.get("key"), v.get("value")) for v in variables if isinstance(v, dict)]
    for key, value in items:
        if isinstance(key, str) and key.lower() == SECTOR_HEADER.lower() and isinstance(value, str):
            sector = _SECTOR_CHARS.sub("", value.strip())[:64]
            return sector or None
    return None


def _fold(text: str) -> str:
    """Upper case, no accents, punctuation as spaces, single spaces: "Arrêt SMS !" -> "ARRET SMS"."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words = re.sub(r"[^0-9A-Za-z]+", " ", bare).split()
    return " ".join(words).upper()


def is_stop(body: object, stop_words: Iterable[str]) -> bool:
    """A reply that withdraws consent: a stop word alone or opening the reply ("Stop SMS", "arrêt").

    Matching on the first words errs towards honouring an opposition: a missed STOP is the
    expensive mistake.
    """
    if not isinstance(body, str):
        return False
    text = _fold(body[:2000])
    if not text:
        return False
    for word in stop_words:
        folded = _fold(word)
        if folded and (text == folded or text.startswith(folded + " ")):
            return True
    return False
