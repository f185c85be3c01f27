"""The evidence pack for one (professional, consumer) pair: what an inspector asks to see.

Built from the pair's history in Redis (consents with their proof, attempts, refusals) and from
the audit files (every decision, refusal and consent line naming the consumer's keyed hash),
each fact with the audit line that records it (file:line, seq) and whether the hash chain holds
up to that line. The consumer appears only as its keyed hash; the HTML page escapes everything
it shows (a proof is free text typed by someone else).
"""

from __future__ import annotations

import html as markup
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from npv_guard import audit as trail
from npv_guard.core.calendar import utc_iso
from npv_guard.core.decide import consent_at
from npv_guard.core.model import ConsentEvent
from npv_guard.store import PairHistory


def consent_validity(event: ConsentEvent, events: Sequence[ConsentEvent], at: datetime) -> dict[str, Any]:
    """Whether a grant is the consent in force at `at`, and if not, what ended it.

    The one place the pack judges a consent's validity: a rule on consent lifetime (a maximum
    age) belongs here too, next to the withdrawal rule the core already applies (`consent_at`).
    """
    if not event.granted:
        return {"in_force": False, "status": "withdrawal", "ended_at": None}
    if event.at > at:
        return {"in_force": False, "status": "not yet given", "ended_at": None}
    current = consent_at(tuple(events), at)
    if current == event:
        return {"in_force": True, "status": "in force", "ended_at": None}
    later = [e for e in events if e.at >= event.at and e != event and e.at <= at]
    ender = min(later, key=lambda e: (e.at, e.granted), default=None)
    if ender is not None and not ender.granted:
        return {"in_force": False, "status": "withdrawn", "ended_at": utc_iso(ender.at)}
    return {
        "in_force": False,
        "status": "superseded by a later grant",
        "ended_at": utc_iso(ender.at) if ender else None,
    }


def build(
    professional: str, digests: Sequence[str], history: PairHistory, files: Sequence[str], at: datetime
) -> dict[str, Any]:
    check = trail.verify(files)
    order = {path: index for index, path in enumerate(files)}
    bad = _position(check.bad_line, order) if not check.ok and check.bad_line else None

    def reference(line: trail.Line) -> dict[str, Any]:
        position = (order[line.file], line.number)
        return {
            "ref": line.ref,
            "seq": line.seq,
            # A line before the first tampered one is covered by the chain; from it on, nothing is.
            "chain_ok": check.ok or (bad is not None and position < bad),
        }

    lines = list(trail.find(files, digests, professional))
    by_kind: dict[str, list[trail.Line]] = {}
    for line in lines:
        assert line.data is not None
        by_kind.setdefault(str(line.data.get("event")), []).append(line)

    state = history.state
    consents = []
    for event in sorted(state.consents, key=lambda e: e.at):
        fields = trail.consent_fields("", professional, None, event)
        matches = [
            line
            for line in by_kind.get("consent", [])
            if line.data is not None
            and all(line.data.get(k) == fields[k] for k in ("at", "granted", "basis", "proof_sha256"))
        ]
        consents.append(
            {
                "at": utc_iso(event.at),
                "granted": event.granted,
                "basis": event.basis.value if event.basis else None,
                "proof": event.proof,
                "outside_hours": event.outside_hours,
                "validity": consent_validity(event, state.consents, at),
                "audit": [reference(line) for line in matches],
            }
        )
    decisions = by_kind.get("decision", [])
    attempts = []
    for attempt in sorted(state.attempts, key=lambda a: a.at):
        matches = [
            line for line in decisions if attempt.call_id and line.data and line.data.get("call_id") == attempt.call_id
        ]
        attempts.append(
            {
                "at": utc_iso(attempt.at),
                "call_id": attempt.call_id,
                "campaign": attempt.campaign or None,
                "lead": attempt.lead or None,
                "audit": [reference(line) for line in matches],
            }
        )
    refusal_lines = by_kind.get("refusal", []) + by_kind.get("journal_replay", [])
    refusals = []
    for refusal in sorted(state.refusals, key=lambda r: r.at):
        matches = [
            line
            for line in refusal_lines
            if line.data
            and _same_instant(line.data.get("at"), refusal.at)
            and line.data.get("source") == refusal.source.value
        ]
        refusals.append(
            {
                "at": utc_iso(refusal.at),
                "source": refusal.source.value,
                "call_id": refusal.call_id,
                "audit": [reference(line) for line in matches],
            }
        )
    return {
        "professional": professional,
        "consumer": digests[0],
        "at": utc_iso(at),
        "audit": {
            "files": list(files),
            "chain_ok": check.ok,
            "problem": check.problem or None,
            "head_seq": check.head_seq,
            "head_hash": check.head_hash,
            "lines_for_consumer": len(lines),
        },
        "consents": consents,
        "attempts": attempts,
        "refusals": refusals,
        "decisions": [
            {
                "at": (line.data or {}).get("at"),
                "mode": (line.data or {}).get("mode"),
                "call_id": (line.data or {}).get("call_id"),
                "verdict": (line.data or {}).get("verdict"),
                "reasons": (line.data or {}).get("reasons", []),
                "campaign": (line.data or {}).get("campaign"),
                "lead": (line.data or {}).get("lead"),
                "local_time": (line.data or {}).get("local_time"),
                "audit": reference(line),
            }
            for line in decisions
        ],
        "refusal_lines": [
            {
                "at": (line.data or {}).get("at"),
                "event": (line.data or {}).get("event"),
                "mode": (line.data or {}).get("mode"),
                "source": (line.data or {}).get("source"),
                "recorded": (line.data or {}).get("recorded", True),
                "error": (line.data or {}).get("error"),
                "campaign": (line.data or {}).get("campaign"),
                "audit": reference(line),
            }
            for line in refusal_lines
        ],
    }


def _position(ref: str, order: dict[str, int]) -> tuple[int, int]:
    path, _, number = ref.rpartition(":")
    return order.get(path, len(order)), int(number)


def _same_instant(text: Any, instant: datetime) -> bool:
    try:
        return abs((datetime.fromisoformat(str(text).replace("Z", "+00:00")) - instant).total_seconds()) < 0.001
    except ValueError:
        return False


def summary(pack: dict[str, Any]) -> str:
    check = pack["audit"]
    lines = [
        f"evidence for professional {pack['professional']}, consumer {pack['consumer']} (keyed hash) at {pack['at']}",
        f"audit chain: {'intact' if check['chain_ok'] else 'BROKEN: ' + str(check['problem'])}"
        f" ({check['lines_for_consumer']} lines for this consumer)",
        f"consents: {len(pack['consents'])}",
    ]
    for consent in pack["consents"]:
        refs = ", ".join(a["ref"] for a in consent["audit"]) or "no audit line"
        what = f"{consent['basis']} granted" if consent["granted"] else "withdrawn"
        lines.append(
            f"  {consent['at']}  {what}  {consent['validity']['status']}  proof={consent['proof']!r}  [{refs}]"
        )
    for name in ("attempts", "refusals"):
        lines.append(f"{name}: {len(pack[name])}")
        for item in pack[name]:
            refs = ", ".join(a["ref"] for a in item["audit"]) or "no audit line"
            label = f"  campaign={item['campaign']}" if item.get("campaign") else ""
            lines.append(f"  {item['at']}  {item.get('source') or item['call_id']}{label}  [{refs}]")
    lines.append(f"decisions: {len(pack['decisions'])}")
    for decision in pack["decisions"]:
        lines.append(
            f"  {decision['at']}  {decision['verdict']}  {','.join(decision['reasons']) or '-'}  "
            f"campaign={decision['campaign'] or '-'}  [{decision['audit']['ref']}]"
        )
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #eee; } .bad { color: #a00; font-weight: bold; } .ok { color: #060; }
code { font-size: 0.9em; word-break: break-all; }
@media print { body { margin: 0; } h2 { break-after: avoid; } tr { break-inside: avoid; } }
"""


def html(pack: dict[str, Any]) -> str:
    """A printable page, no script, no external resource; every value escaped."""
    e = markup.escape

    def refs(items: list[dict[str, Any]]) -> str:
        if not items:
            return '<span class="bad">no audit line</span>'
        return "<br>".join(
            f"<code>{e(a['ref'])}</code> seq {e(str(a['seq']))} "
            + ('<span class="ok">chain ok</span>' if a["chain_ok"] else '<span class="bad">chain broken</span>')
            for a in items
        )

    def table(headers: list[str], rows: list[list[str]]) -> str:
        if not rows:
            return "<p>none</p>"
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    check = pack["audit"]
    chain = (
        '<span class="ok">intact</span>'
        if check["chain_ok"]
        else f'<span class="bad">BROKEN: {e(str(check["problem"]))}</span>'
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>npv-guard evidence: {e(pack['professional'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Evidence pack: professional {e(pack['professional'])}</h1>",
        f"<p>Consumer (keyed hash): <code>{e(pack['consumer'])}</code><br>As of: {e(pack['at'])}<br>"
        f"Audit files: {e(', '.join(check['files']))}<br>Hash chain: {chain}, head seq "
        f"{e(str(check['head_seq']))} <code>{e(str(check['head_hash']))}</code></p>",
        "<h2>Consents and contracts</h2>",
        table(
            ["at (UTC)", "event", "basis", "proof", "outside hours", "validity", "audit"],
            [
                [
                    e(c["at"]),
                    "grant" if c["granted"] else "withdrawal",
                    e(str(c["basis"] or "")),
                    e(c["proof"]),
                    "yes" if c["outside_hours"] else "no",
                    e(
                        c["validity"]["status"]
                        + (f" ({c['validity']['ended_at']})" if c["validity"]["ended_at"] else "")
                    ),
                    refs(c["audit"]),
                ]
                for c in pack["consents"]
            ],
        ),
        "<h2>Attempts (calls placed)</h2>",
        table(
            ["at (UTC)", "call id", "campaign", "lead", "audit"],
            [
                [e(a["at"]), e(a["call_id"]), e(str(a["campaign"] or "")), e(str(a["lead"] or "")), refs(a["audit"])]
                for a in pack["attempts"]
            ],
        ),
        "<h2>Refusals</h2>",
        table(
            ["at (UTC)", "source", "call id", "audit"],
            [[e(r["at"]), e(r["source"]), e(r["call_id"]), refs(r["audit"])] for r in pack["refusals"]],
        ),
        "<h2>Decisions</h2>",
        table(
            ["at (UTC)", "consumer time", "mode", "verdict", "reasons", "campaign", "audit"],
            [
                [
                    e(str(d["at"])),
                    e(str(d["local_time"] or "")),
                    e(str(d["mode"])),
                    e(str(d["verdict"])),
                    e(", ".join(str(r) for r in d["reasons"])),
                    e(str(d["campaign"] or "")),
                    refs([d["audit"]]),
                ]
                for d in pack["decisions"]
            ],
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
