"""What ``fairfront explain`` prints: the record as short tables (``--format text``) or as JSON."""

from __future__ import annotations

import json
from typing import Any

from fairfront.jsonsafe import json_safe

__all__ = ["render"]

SHOWN = 8
"""Ranked components and exemplars shown per model in the text (all of them are stored)."""


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _importance(record: dict[str, Any]) -> list[str]:
    names = [o["name"] for o in record["objectives"]]
    lines = [f"Which knob: parameter importance per objective ({record['evaluator']}, "
             f"{record['n_complete']} COMPLETE trials; each objective's column sums to 1)",
             f"  {'parameter':<36}" + "".join(f"{n:>16}" for n in names)]
    for family, rows in record["families"].items():
        lines.append(f"  [{family}]")
        lines += [f"  {r['param']:<36}" + "".join(f"{_num(r[n], 3):>16}" for n in names) for r in rows]
    return lines


def _dependence(record: dict[str, Any]) -> list[str]:
    lines = []
    for dep in record["dependence"]:
        by = f" per {dep['by']}" if dep["by"] else ""
        lines.append(f"How {dep['objective']} moves with {dep['param']}{by} (mean over trials in each bin):")
        for row in dep["rows"]:
            level = f"{dep['by']}={row['by']}  " if dep["by"] else ""
            lines.append(f"  {level}{dep['param']} in [{row['low']:.4g}, {row['high']:.4g}]: n={row['n']:<3} "
                         f"mean {_num(row['mean'])}  sd {_num(row['sd'])}")
    return lines


_LEVELS = (("class", "recall of class"), ("group", "accuracy of group"), ("group_tpr", "TPR of group"))


def _who_pays(record: dict[str, Any]) -> list[str]:
    pays = record["who_pays"]
    lines = [f"Who pays: change against the dense teacher (validation; compressed minus teacher), mean of the "
             f"smallest third of trials by {pays['size_objective']} -> the largest third"]
    for family, kinds in pays["families"].items():
        for kind, label in _LEVELS:
            for name, row in kinds.get(kind, {}).items():
                lines.append(f"  {family:<14} {label + ' ' + name:<40} {_num(row['smallest'], 3):>7} -> "
                             f"{_num(row['largest'], 3):>7}  ({row['n']} trials)")
    return lines


def _model(key: str, model: dict[str, Any]) -> list[str]:
    ablation = model["ablation"]
    focus = ablation["focus"]
    by_name = {c["component"]: c["measures"] for c in ablation["components"]}
    lines = [f"Which layer and head, {key}: components ranked by |change of {focus}| when switched off "
             f"(paired bootstrap, {ablation['n_resamples']} resamples, BH-adjusted p; {focus} "
             f"{_num(ablation['base'].get(focus))}, accuracy {_num(ablation['base'].get('accuracy'))} unablated)"]
    for row in ablation["ranking"][:SHOWN]:
        acc = by_name[row["component"]]["accuracy"]
        lines.append(f"  {row['component']:<18} {focus} {row['delta']:+.4f} [{_num(row['ci'][0])}, "
                     f"{_num(row['ci'][1])}] p_adj {_num(row['p_adjusted'], 3)}   accuracy {acc['delta']:+.4f}")
    for kind, agreement in model["agreement"].items():
        rho = agreement["spearman"]
        lines.append(f"  gradient estimate vs ablation ({kind}, {agreement['n']} components): Spearman rho "
                     + (f"{rho:.3f} (p {agreement['p_value']:.3g})" if rho is not None else agreement["note"]))
    return lines


def _exemplars(found: dict[str, Any]) -> list[str]:
    which = f"trial {found['trials'][0]}" if len(found["trials"]) == 1 else f"the front ({len(found['trials'])} trials)"
    lines = [f"Which examples: {found['n_cie']} of {found['n']} validation examples are compression-identified "
             f"exemplars of {which}; share of the CIEs vs share of the split:"]
    for kind in ("class_makeup", "group_makeup"):
        for level, row in found[kind].items():
            lines.append(f"  {kind.split('_')[0]:<6} {level:<22} {row['cie_share']:.3f} vs {row['share']:.3f}")
    for row in found["rows"][:SHOWN]:
        lines.append(f"  #{row['index']} [{row['label']}, {row['group']}] -> {', '.join(row['compressed'])}; dense "
                     f"votes {row['dense_votes']}: {row['text'][:80]}")
    return lines


def render(record: dict[str, Any], fmt: str) -> str:
    """The record in ``fmt`` (``text`` or ``json``)."""
    if fmt == "json":
        return json.dumps(json_safe(record), indent=1) + "\n"
    parts = [_importance(record), _dependence(record), _who_pays(record)]
    parts += [_model(key, model) for key, model in record.get("models", {}).items()]
    if record.get("exemplars"):
        parts.append(_exemplars(record["exemplars"]))
    parts.append([f"stored with the study: user attribute fairfront.explain, full record in artifact "
                  f"{record['artifact_id']}"])
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"
