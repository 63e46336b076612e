"""A contender from a job spec, whichever family builds it: a ptcore method
(:func:`orchestrator.bench.workload.ptcore_contender`) or a PEFT peer
(:func:`orchestrator.bench.peft_peer.peft_contender`). Here, above both, so that
``peft_peer`` can use ``workload``'s batch and step without the two importing each other."""

from __future__ import annotations

from typing import Any

from orchestrator.bench.peft_peer import peft_contender
from orchestrator.bench.workload import Contender, Workload, ptcore_contender


def build_contender(job: dict[str, Any], backbone, workload: Workload, device="cpu", check: bool = True) -> Contender:
    """A contender from a job spec: ``{"name", "family": "ptcore", "method", "method_args"}``
    or ``{"name", "family": "peft", "peft": peer name}``."""
    if job["family"] == "peft":
        return peft_contender(job["name"], job["peft"], backbone, workload, device, check=check)
    return ptcore_contender(job["name"], job["method"], job.get("method_args", {}), backbone, workload, device, job.get("run_args"))
