"""Write docs/pasture.md: what microfedi shows for each fediverse-pasture input.

    python tools/pasture_table.py > docs/pasture.md

The corpus is delivered by one harness only, tests/federation/test_pasture.py:
this script runs that test with pytest (its progress goes to stderr) and turns
the outcomes it records, the ``pasture_outcomes`` property, into one table per
input set, like the public fediverse support tables. It exits with pytest's
status, so a failing run is noticed even though its table is still written.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import fediverse_pasture_inputs
import pytest
from fediverse_pasture_inputs.version import __version__ as corpus_version

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "tests" / "federation" / "test_pasture.py"
# The test property test_pasture.py records its outcomes under.
OUTCOMES_PROPERTY = "pasture_outcomes"
# Inputs are shown as compact JSON: strings and whole inputs cut to these lengths.
MAX_STRING = 60
MAX_INPUT = 220
# The ids the harness gives each input's objects, left out where reasons are counted.
_INPUT_ID = re.compile(r"https://[^\s/]+/(?:object|activity)/[\w-]+-\d+")


class OutcomeRecorder:
    """A pytest plugin keeping the outcomes the harness records."""

    def __init__(self) -> None:
        self.outcomes: list[dict[str, Any]] | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == OUTCOMES_PROPERTY:
                self.outcomes = value


def run_harness() -> tuple[int, list[dict[str, Any]] | None]:
    """Run the harness test; pytest's exit status and the outcomes it recorded."""
    recorder = OutcomeRecorder()
    # stdout is the table; pytest talks to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        status = pytest.main([str(HARNESS), "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO)], plugins=[recorder])
    return int(status), recorder.outcomes


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def code(text: str) -> str:
    """A code span, for HTML and JSON shown as written."""
    if not text:
        return "(empty)"
    if "`" in text:
        return f"`` {text} ``"
    return f"`{text}`"


def _shortened(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[: MAX_STRING - 1] + "…"
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    return value


def input_text(example: dict[str, Any]) -> str:
    """An input as compact JSON, long strings and long inputs cut."""
    text = json.dumps(_shortened(example), ensure_ascii=False)
    return text if len(text) <= MAX_INPUT else text[: MAX_INPUT - 1] + "…"


def _file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1] or url


def shown(post: dict[str, Any]) -> str:
    """What a reader of an accepted post sees, beyond a plain public Note: the content first."""
    parts = [code(post["content"])]
    if post["summary"]:
        parts.append(f"content warning {code(post['summary'])}")
    if post["sensitive"]:
        parts.append("sensitive")
    if post["type"] != "Note":
        parts.append(f"type {post['type']}")
    if post["visibility"] != "public":
        parts.append(post["visibility"])
    if post["language"]:
        parts.append(f"language {post['language']}")
    if post["hashtags"]:
        parts.append("hashtags " + " ".join(f"#{tag}" for tag in post["hashtags"]))
    if post["mentions"]:
        parts.append("mentions " + ", ".join(post["mentions"]))
    if post["emoji"]:
        parts.append("emoji " + " ".join(f":{name}:" for name in post["emoji"]))
    for attachment in post["attachments"]:
        described = [attachment["type"], _file_name(attachment["url"])]
        described += [f"({attachment[key]})" for key in ("mediaType", "name") if attachment.get(key)]
        parts.append("attachment " + " ".join(described))
    if post["in_reply_to"]:
        parts.append(f"reply to {post['in_reply_to']}")
    if post["url"]:
        parts.append(f"url {post['url']}")
    if post["poll"]:
        parts.append("poll " + " / ".join(option["title"] for option in post["poll"]["options"]))
    return "; ".join(parts)


def reason(outcome: dict[str, Any]) -> str:
    """Why an input is not shown, without the "refused: " the inbox tasks' errors start with."""
    return outcome["reason"].removeprefix("refused: ")


def what_we_show(outcome: dict[str, Any]) -> str:
    if outcome["verdict"] == "accepted":
        return shown(outcome["post"])
    if outcome["verdict"] == "refused" and outcome["status"] < 300:
        return f"refused when processed: {reason(outcome)}"
    if outcome["verdict"] == "refused":
        return f"refused with HTTP {outcome['status']}: {reason(outcome)}"
    if outcome["verdict"] == "dropped":
        return f"not shown: {reason(outcome)}"
    return f"**{outcome['verdict']}** (HTTP {outcome['status']}): {reason(outcome)}"


def counted_reason(outcome: dict[str, Any]) -> str:
    """A reason without the input's own ids, so that the same reasons count together."""
    return _INPUT_ID.sub("<id>", reason(outcome))


def summary_lines(outcomes: list[dict[str, Any]]) -> list[str]:
    """The totals, and how many inputs each reason accounts for."""
    shown_ways = ("accepted", "refused", "dropped")
    counts = Counter(outcome["verdict"] for outcome in outcomes)
    error_verdicts = set(counts) - set(shown_ways)
    lines = [
        (
            f"{len(outcomes)} inputs: {counts['accepted']} accepted, {counts['refused']} refused, "
            f"{counts['dropped']} dropped (not a kind of post), {sum(counts[v] for v in error_verdicts)} errors "
            "(answers of 500 and up, crashes, posts lost)."
        ),
        "",
    ]
    for title, verdicts in (("Refused", {"refused"}), ("Dropped", {"dropped"}), ("Errors", error_verdicts)):
        reasons = Counter(
            f"{outcome['verdict']}: {counted_reason(outcome)}" if title == "Errors" else counted_reason(outcome)
            for outcome in outcomes
            if outcome["verdict"] in verdicts
        )
        if reasons:
            lines += [f"{title}, by reason:", ""]
            lines += [f"- {count} × {cell(text)}" for text, count in reasons.most_common()]
            lines.append("")
    return lines


def markdown(outcomes: list[dict[str, Any]]) -> str:
    """docs/pasture.md: the totals, then a table per input set, grouped as the pasture groups them."""
    lines = [
        "# What microfedi shows for the fediverse-pasture inputs",
        "",
        (
            "Generated by `python tools/pasture_table.py > docs/pasture.md` with fediverse-pasture-inputs "
            f"{corpus_version}; do not edit by hand."
        ),
        "",
        (
            "Every input of the [fediverse-pasture](https://funfedi.dev/) corpus is sent to a local account "
            "the way the pasture sends it: a Note skeleton (`content` \"text\", public, addressed to the "
            "account), the input laid over it, wrapped in a Create, signed and POSTed to the account's inbox "
            "over https; the pasture's actor and host are replaced by the sending peer's. The account follows "
            "the sender. *What we show* is the post as stored — its HTML content after sanitizing, then the "
            "fields that differ from a plain public Note — or why there is none. The harness is "
            "`tests/federation/test_pasture.py`."
        ),
        "",
        *summary_lines(outcomes),
    ]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for outcome in outcomes:
        by_set.setdefault(outcome["set_name"], []).append(outcome)
    inputs = fediverse_pasture_inputs.available
    for group in dict.fromkeys(inputs[name].group for name in by_set):
        lines += [f"## {group}", ""]
        for name, rows in by_set.items():
            if inputs[name].group != group:
                continue
            lines += [f"### {inputs[name].title} (`{name}`)", "", "| # | input | what we show |", "| --- | --- | --- |"]
            for row in rows:
                lines.append(f"| {row['number']} | {cell(code(input_text(row['example'])))} | {cell(what_we_show(row))} |")
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    status, outcomes = run_harness()
    if outcomes is None:
        print(f"the harness recorded no outcomes (pytest exit status {status})", file=sys.stderr)
        return status or 1
    sys.stdout.write(markdown(outcomes))
    if status:
        print(f"the harness test failed (pytest exit status {status}); the table shows what happened", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
