"""The result of a babysitting check: a verdict a user can act on, the numbers behind it, and
one line that explains it."""

from __future__ import annotations

from dataclasses import dataclass, field

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class CheckResult:
    """``verdict``: "pass", "warn" or "fail"; ``numbers``: what was measured; ``message``: one
    line, the lecture's reading of the numbers and what to do."""

    name: str
    verdict: str
    message: str
    numbers: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict != FAIL

    def line(self) -> str:
        """``PASS  initial loss: 2.31 vs log(10) = 2.30 ...``: verdict first."""
        return f"{self.verdict.upper():5s} {self.name}: {self.message}"

    def __str__(self) -> str:
        return self.line()
