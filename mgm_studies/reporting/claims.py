"""The report's Claims section: each claim of the space (`ClaimSpec`) read against the finished trials, its values
compared as the ablation tables compare theirs (`tables.against`: paired by seed and the other axes, Holm-adjusted)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mgm_studies.reporting import stats
from mgm_studies.reporting.cells import interval_text, versus
from mgm_studies.reporting.collect import StudyData
from mgm_studies.reporting.render import Block, Heading, Paragraph, Table
from mgm_studies.reporting.tables import against, finished_trials, fmt


@dataclass
class ClaimCheck:
    """A claim of the space read against the trials: each value it is compared with (its own mean and the claimed
    best value's difference to it, Holm-adjusted over the claim's comparisons), and the outcome."""

    statement: str
    axis: str
    metric: str
    best: str
    relation: str
    best_interval: stats.Interval
    rows: list[tuple[str, stats.Interval, stats.Comparison]]  # (other value, its interval, other minus best)
    outcome: str  # "holds", "does not hold", "not shown", or "cannot be read"
    reason: str


def check_claim(leveled: pd.DataFrame, order: dict[str, list[str]], axes: list[str], claim: dict, mode: str):
    """Read `claim` (a ClaimSpec as JSON) against the finished trials; `mode` is the claim metric's."""
    axis, metric, relation = claim["axis"], claim["metric"], claim.get("relation", "better")
    best = fmt(claim["best"])
    compared = [fmt(v) for v in claim.get("against") or []] or [lv for lv in order.get(axis, []) if lv != best]
    finished = finished_trials(leveled, metric)
    for key, value in (claim.get("where") or {}).items():
        finished = finished[finished[key] == fmt(value)] if key in finished else finished[:0]
    empty = stats.mean_interval([])

    def cannot(reason: str) -> ClaimCheck:
        return ClaimCheck(claim["statement"], axis, metric, best, relation, empty, [], "cannot be read", reason)

    if axis not in axes or best not in order.get(axis, []):
        return cannot(f"{axis}={best} is not among the swept values")
    others = [a for a in axes if a != axis and a not in (claim.get("where") or {})]
    reference = finished[finished[axis] == best]
    if reference.empty:
        return cannot(f"no finished trial at {axis}={best} reported {metric}")
    kept = [
        (level, stats.mean_interval(arm[metric].tolist()))
        for level in compared
        if not (arm := finished[finished[axis] == level]).empty
    ]
    if not kept:
        return cannot(f"no finished trial at the values it is compared with ({', '.join(compared)})")
    # Other minus best: "worse" means the claimed best beats it.
    judged = against(finished, axis, others, metric, best, [level for level, _ in kept], mode)
    rows = [(level, interval, c) for (level, interval), c in zip(kept, judged, strict=True)]
    lost = [level for level, _, c in rows if c.verdict == stats.BETTER]
    untested = [level for level, _, c in rows if c.verdict == stats.TOO_FEW]
    unclear = [level for level, _, c in rows if c.verdict == stats.NOISE]
    ahead = [level for level, _, c in rows if (c.diff < 0) == (mode == "min") and c.diff != 0]
    if lost:
        outcome, reason = "does not hold", f"{', '.join(lost)} did significantly better than {best}"
    elif relation == "not_worse":
        outcome = "not shown" if untested else "holds"
        reason = "no value did significantly better" + (f" (untested: {', '.join(untested)})" if untested else "")
        if ahead:
            reason += f"; {', '.join(ahead)} had the better mean, within noise"
    elif untested or unclear:
        outcome = "not shown"
        parts = []
        if unclear:
            parts.append(f"against {', '.join(unclear)} the difference is within noise")
        if untested:
            parts.append(f"too few trials to test {', '.join(untested)}")
        if ahead:
            parts.append(f"{', '.join(ahead)} had the better mean")
        reason = "; ".join(parts)
    else:
        outcome, reason = "holds", f"{best} did significantly better than each of {', '.join(lv for lv, _ in kept)}"
    best_interval = stats.mean_interval(reference[metric].tolist())
    return ClaimCheck(claim["statement"], axis, metric, best, relation, best_interval, rows, outcome, reason)


def claims_section(data: StudyData, leveled: pd.DataFrame, order: dict[str, list[str]]) -> list[Block]:
    """The space's claims, each read against the trials: outcome, reason and the comparisons."""
    if not data.claims:
        return []
    blocks: list[Block] = [
        Heading("Claims"),
        Paragraph(
            "What the study set out to test (the space's `claims`), read against its finished trials with the "
            "statistics of the Summary: a claim holds when the claimed value does significantly better than each "
            "value it is compared with (Holm-adjusted over that claim's comparisons), or, for `not_worse`, when none "
            "does significantly better than it."
        ),
    ]
    for claim in data.claims:
        names = data.option_names.get(claim["axis"], {})  # a claim names a positional label (option-i) as given
        claim = {
            **claim,
            "best": names.get(claim["best"], claim["best"]),
            "against": [names.get(v, v) for v in claim.get("against") or []] or None,
        }
        mode = data.mode_of(claim["metric"])
        check = check_claim(leveled, order, data.axes, claim, mode)
        best = check.best_interval
        where = claim.get("where")
        blocks += [
            Heading(check.statement, 3),
            Paragraph(
                f"{check.outcome.upper()}: {check.reason}. Read on {check.metric} "
                f"({'lower' if mode == 'min' else 'higher'} is better) along {check.axis}"
                + (
                    ", at " + ", ".join(f"{k}={v}" for k, v in where.items())
                    if where
                    else ", the other axes marginalised"
                )
                + f"; {check.axis}={check.best}: "
                + (interval_text(best) if best.n else "no trials")
                + "."
            ),
        ]
        if check.rows:
            rows = [[level, interval_text(iv), versus(c, "seed")] for level, iv, c in check.rows]
            header = [
                check.axis,
                f"{check.metric}: mean (n) [95 % CI]",
                f"minus {check.best}: [95 % CI], Holm p, verdict",
            ]
            blocks.append(Table(header, rows, caption=f"{check.statement}: each value against {check.best}"))
    return blocks
