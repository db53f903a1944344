"""`python -m scorecard.run --publish <report dir>`: a scorecard's figures into runbooks/scorecard.json.

Per alert (a runbook per alertname): the experiments that fired it, detection against the bound,
reset, the gaps with their reasons, and the false pages of the soak. Then the runbook lines are
regenerated from it (runbooks/scorecard_line.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from runbooks.scorecard_line import FIGURES, AlertFigures, DetectionFigure, Published, ResetFigure
from scorecard.model import Scorecard
from scorecard.rules import pair
from stack import ROOT


def figures(card: Scorecard, report: str) -> Published:
    alerts: dict[str, dict] = {}
    soak_s = None
    if card.precision is not None:
        soak_s = round(card.precision.end - card.precision.start, 1)
    for c in card.coverage:
        entry = alerts.setdefault(c.alert, {"severity": c.severity, "fired_by": [], "gaps": [],
                                            "detection": [], "reset": []})
        if c.severity == "critical":  # a page outranks a warning of the same name in the line
            entry["severity"] = "critical"
        entry["fired_by"] = sorted({*entry["fired_by"], *c.fired_by})
        if not c.fired_by and c.gap_reason:
            entry["gaps"].append(f"{pair(c.identity)}: {c.gap_reason}" if pair(c.identity) else c.gap_reason)
    for d in card.detection:
        alerts[d.alert]["detection"].append(DetectionFigure(
            experiment=d.experiment, pair=pair(d.identity), detect_s=d.detect_s, bound_s=d.bound.total_s,
            verdict=d.verdict))
    by_identity = {d.identity: d.alert for d in card.detection}
    for r in card.reset:
        alerts[by_identity[r.identity]]["reset"].append(ResetFigure(
            experiment=r.experiment, pair=pair(r.identity), reset_s=r.reset_s,
            still_firing=r.still_firing_at is not None))
    for name, entry in alerts.items():
        if card.precision is not None:
            entry["false_pages"] = sum(p.alert == name for p in card.precision.false_pages)
            entry["soak_s"] = soak_s
    return Published(date=time.strftime("%Y-%m-%d", time.gmtime(card.started)), mode=card.mode, report=report,
                     alerts={k: AlertFigures(**v) for k, v in sorted(alerts.items())})


def publish(report_dir: Path, out: Path = FIGURES) -> Published:
    card = Scorecard.model_validate_json((report_dir / "scorecard.json").read_text())
    try:
        report = str(report_dir.resolve().relative_to(ROOT))
    except ValueError:
        report = str(report_dir)
    published = figures(card, report)
    out.write_text(json.dumps(published.model_dump(mode="json"), indent=2) + "\n")
    return published

