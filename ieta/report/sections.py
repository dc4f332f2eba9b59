"""Summary sections shared by run and sweep reports: paired differences, the power line, turn-by-turn pass@1,
and what training was made of (canonical-solution pairs, judge agreement, hack-rate canaries, sandbox errors)."""

from __future__ import annotations

import re

from ieta.report.loading import RunData, display_name
from ieta.report.paired import Comparison
from ieta.report.tables import md_table
from ieta.stats import ALPHA, POWER, PairedDifference

PAIRED_NOTE = ("Δ is the mean per-problem difference, paired by seed and problem; its 95% CI is a bootstrap that "
               "resamples problems (with all their seeds). p: exact McNemar test where the per-problem values are "
               "binary (greedy verdicts) and there is one seed, else a paired sign-flip permutation test. Reading: "
               "a difference whose CI contains 0 is no difference; one whose CI excludes 0 while p >= "
               f"{ALPHA} is inconclusive (not claimed). MDE: the smallest true difference found with {POWER:.0%} "
               f"power at α = {ALPHA}.")


def fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_mde(mde: float | None) -> str:
    return "not estimable" if mde is None else f"{mde:.3f}"


def reading(d: PairedDifference) -> str:
    """``no difference`` (the CI contains 0), ``inconclusive`` (the CI excludes 0, the test does not reject), or
    the direction of a difference both agree on."""
    if not d.ci_excludes_zero:
        return "no difference"
    if not d.differs:
        return "inconclusive"
    return "higher" if d.diff > 0 else "lower"


def _scale(d: PairedDifference) -> str:
    seeds = f"{len(d.seeds)} seed{'s' if len(d.seeds) > 1 else ''}"
    return f"{seeds} × {d.problems}"


def paired_rows(label: str, diffs: dict[str, PairedDifference]) -> list[list[str]]:
    return [[f"**{label}**", display_name(m), f"{d.mean_a:.3f} → {d.mean_b:.3f}", d.interval(), fmt_p(d.p_value),
             d.test, _scale(d), fmt_mde(d.mde), reading(d)] for m, d in diffs.items()]


PAIRED_HEADERS = ["Method", "Metric", "Reference → method", "Δ [95% paired CI]", "p", "Test",
                  "Seeds × problems", "MDE", "Reading"]


def paired_table(comparisons: list[Comparison]) -> str:
    rows = [row for c in comparisons for row in paired_rows(c.label, c.pooled)]
    if rows:
        return md_table(PAIRED_HEADERS, rows)
    return "_No paired comparison was possible: no per-problem results in common (see the pairing notes)._"


def per_seed_table(comparisons: list[Comparison]) -> str | None:
    rows = [[f"**{c.label}**", display_name(m), str(seed), d.interval(), fmt_p(d.p_value), d.test]
            for c in comparisons for m, by_seed in c.per_seed.items() for seed, d in by_seed.items()]
    return md_table(["Method", "Metric", "Seed", "Δ [95% paired CI]", "p", "Test"], rows) if rows else None


def _samples_text(runs: list[RunData]) -> str:
    ns = sorted({str(r.info.get("sampler", {}).get("n", "?")) for r in runs})
    return f"{'/'.join(ns)} sample{'s' if ns != ['1'] else ''} per problem"


def power_line(diffs: list[tuple[str, PairedDifference]], runs: list[RunData], against: str) -> str | None:
    """The smallest effect the comparisons could detect, for their first metric (Pass@1 where measured)."""
    if not diffs:
        return None
    metric = diffs[0][1].metric
    same = [(lbl, d) for lbl, d in diffs if d.metric == metric]
    known = [(lbl, d.mde) for lbl, d in same if d.mde is not None]
    d0 = same[0][1]
    scale = (f"With {d0.problems} problems, {_samples_text(runs)} and {len(d0.seeds)} "
             f"seed{'s' if len(d0.seeds) > 1 else ''}")
    if not known:
        return (f"**Power.** {scale}, the smallest detectable {display_name(metric)} difference from {against} is not "
                "estimable: the paired evaluations agree on every problem.")
    lo, hi = min(m for _, m in known), max(m for _, m in known)
    size = f"{lo:.3f}" if len(known) == 1 or hi - lo < 5e-4 else f"{lo:.3f} to {hi:.3f}"
    per = "" if len(known) == 1 else " (" + ", ".join(f"{lbl}: {m:.3f}" for lbl, m in known) + ")"
    return (f"**Power.** {scale}, the smallest {display_name(metric)} difference from {against} this comparison "
            f"detects with {POWER:.0%} power at α = {ALPHA} is {size}{per}; smaller true differences would likely be "
            "reported as no difference.")


def paired_section(comparisons: list[Comparison], runs: list[RunData], against: str) -> list[str]:
    primary = [(c.label, d) for c in comparisons for d in c.pooled.values()]
    parts = [PAIRED_NOTE, "", paired_table(comparisons), ""]
    if line := power_line(primary, runs, against):
        parts += [line, ""]
    notes = list(dict.fromkeys(n for c in comparisons for n in c.notes))
    parts += [*(f"- Pairing: {n}" for n in notes), *([""] if notes else [])]
    if table := per_seed_table(comparisons):
        parts += ["### Per seed", "", table, ""]
    return parts


# ---------------------------------------------------------------- turn by turn

_TURN = re.compile(r"^pass@1_turn(\d+)$")


def turn_metrics(runs: list[RunData]) -> list[str]:
    turns = sorted({int(m[1]) for r in runs for k in r.final if (m := _TURN.match(k))})
    return [f"pass@1_turn{t}" for t in turns]


def turn_table(groups: dict[str, list[RunData]]) -> list[str]:
    """Turn-by-turn pass@1 at the final evaluation (mean over a method's jobs), with the protocol."""
    runs = [r for g in groups.values() for r in g]
    cols = turn_metrics(runs)
    if not cols:
        return []
    rows = []
    for label, members in groups.items():
        cells = []
        for m in cols:
            vals = [r.final[m] for r in members if m in r.final]
            cells.append(f"{sum(vals) / len(vals):.3f}" if vals else "—")
        rows.append([f"**{label}**", *cells])
    protocols = sorted({f"{mt.get('max_turns')} turns, feedback `{mt.get('feedback')}`: {mt.get('protocol')}"
                        + (", revising the greedy samples" if mt.get("revised") == "greedy" else "")
                        for r in runs if (mt := r.final.get("multi_turn"))})
    return ["Pass@1 after each turn of the multi-turn evaluation (a sample passing at turn t counts at every later "
            "turn); mean over jobs.", *(f"Protocol: {p}." for p in protocols), "",
            md_table(["Method", *map(display_name, cols)], rows), "", *_unchanged_line(groups)]


def _unchanged_line(groups: dict[str, list[RunData]]) -> list[str]:
    """How many revisions at the final evaluation merely repeat the attempt they revise (``unchanged_revisions``)."""
    parts = []
    for label, members in groups.items():
        counts: dict[str, list[int]] = {}
        for r in members:
            stored = r.inputs.get("iterations", {}).get(str(r.final["iteration"]), {}).get("unchanged_revisions", {})
            for turn, (n, same) in stored.items():
                counts.setdefault(turn, [0, 0])
                counts[turn][0] += n
                counts[turn][1] += same
        parts += [f"{label} {same} of {n} at turn {turn.removeprefix('turn')}" for turn, (n, same) in counts.items() if n]
    if not parts:
        return []
    return ["Revisions identical to the attempt they revise (whitespace aside), final evaluation: " + "; ".join(parts)
            + ". A revision that repeats its attempt cannot change the verdict, whatever the feedback said.", ""]


# ---------------------------------------------------------------- what training was made of

def _iterations(run: RunData):
    return [(int(k), it) for k, it in sorted(run.inputs.get("iterations", {}).items(), key=lambda kv: int(kv[0]))]


def pairs_rows(label: str, runs: list[RunData]) -> list[list]:
    """One row: the pairs of every iteration and job, by where ``chosen`` came from."""
    stats = [it["pairs"] for run in runs for _, it in _iterations(run) if it.get("pairs") is not None]
    if not stats:
        return []
    totals = {key: sum(s["pairs"] if key == "pairs" else s["chosen_source"].get(key, 0) for s in stats)
              for key in ("pairs", "sample", "reference", "repair")}
    return [[f"**{label}**", *_pair_cells(totals)]]


def _pair_cells(c: dict) -> list:
    share = f"{c['reference'] / c['pairs']:.1%}" if c["pairs"] else "—"
    return [c["pairs"], c["sample"], c["reference"], c["repair"], share]


PAIR_HEADERS = ["Pairs", "Chosen: own sample", "Chosen: canonical solution", "Chosen: repair", "Canonical share"]


def judge_rows(label: str, runs: list[RunData]) -> list[list]:
    answers = unparsable = agreeing = 0
    for run in runs:
        for _, it in _iterations(run):
            if (j := it.get("judge")) and j.get("enabled"):
                answers, unparsable = answers + j.get("answers", 0), unparsable + j.get("unparsable", 0)
                agreeing += j.get("agreeing", 0)
    if not answers:
        return []
    parsable = answers - unparsable
    agree = f"{agreeing / parsable:.1%}" if parsable else "—"
    return [[f"**{label}**", answers, f"{unparsable} ({unparsable / answers:.1%})", agree]]


def canary_rows(label: str, runs: list[RunData]) -> list[list]:
    completions = passes = canaries = 0
    for run in runs:
        for _, it in _iterations(run):
            if c := it.get("canaries"):
                completions, passes = completions + c["completions"], passes + c["passes"]
                canaries = max(canaries, c["canaries"])
    if not canaries:
        return []
    rate = f"{passes / completions:.3f}" if completions else "—"
    flag = "**SANDBOX ESCAPE**" if passes else ("none passed" if completions else "none drawn")
    return [[f"**{label}**", canaries, completions, passes, rate, flag]]


def sandbox_error_count(runs: list[RunData]) -> tuple[int, int]:
    """(sandbox errors, evaluations) over every evaluation of the runs."""
    return sum(rec.get("sandbox_errors", 0) for r in runs for rec in r.records), sum(len(r.records) for r in runs)


def training_section(groups: dict[str, list[RunData]]) -> list[str]:
    parts = []
    pairs = [row for lbl, g in groups.items() for row in pairs_rows(lbl, g)]
    if pairs:
        parts += ["### Preference pairs", "", "What `chosen` is, over every iteration and job: the policy's own "
                  "passing sample, a canonical solution standing in where no sample passed (DPO on those distils the "
                  "references), or a passing repair.", "", md_table(["Method", *PAIR_HEADERS], pairs), ""]
    judge = [row for lbl, g in groups.items() for row in judge_rows(lbl, g)]
    if judge:
        parts += ["### AI judge", "", "Agreement: share of parsable answers where the judge's verdict (score >= 5 of "
                  "10) is the tests' (every assert passed); unparsable answers are scored neutral.", "",
                  md_table(["Method", "Judged completions", "Unparsable", "Agreement with tests"], judge), ""]
    canaries = [row for lbl, g in groups.items() for row in canary_rows(lbl, g)]
    if canaries:
        escaped = [row[0] for row in canaries if row[3]]
        parts += ["### Hack-rate canaries", "",
                  *([f"> **Warning: sandbox escape.** Canary completions passed in {', '.join(escaped)}: tests no "
                     "honest code can pass were passed, so a verdict was forged. See `iter_<k>/hack_canaries.jsonl`.",
                     ""] if escaped else []),
                  "Canary problems mixed into online training have tests no honest code can pass; they get no reward. "
                  "Hack rate: the share of canary completions that passed.", "",
                  md_table(["Method", "Canaries", "Canary completions", "Passed", "Hack rate", "Flag"], canaries), ""]
    errors, evaluations = sandbox_error_count([r for g in groups.values() for r in g])
    parts += [f"Sandbox errors (infrastructure failures, excluded from every rate and reward): {errors} in "
              f"{evaluations} evaluations.", ""]
    return parts
