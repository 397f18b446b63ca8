"""Probes without a scenario file: `chainlab probe`, `chainlab matrix`, and `Lab` for tests.

Both share the scenario runner's bracketing (`runner.capture`), with its deadlines, lab
lock, run dirs and PARTIAL marker: all probes of a run go out at once inside one
collection window, and `attribute` tells their packets apart. A probe's run dir
(`<lab>-<time>-probe-<src>-<dst>-<service>`) looks like a scenario's (logs/, rules/,
routes/, probe.txt, analysis.json, diagram.svg, report.html); a matrix's
(`<lab>-<time>-matrix-<service>`) has the shared evidence at its top, matrix.json,
matrix.html, expect.txt, and a run dir per cell under cells/.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from ipaddress import IPv4Address
from pathlib import Path

from chainlab.errors import ChainlabError, InputError, Problem
from chainlab.files import private_dir, read_regular_file, write_atomic
from chainlab.inventory import Inventory, load_inventory
from chainlab.labstate import LabState, load_state
from chainlab.lock import lab_lock
from chainlab.providers import provider_for
from chainlab.report.matrix import render_matrix_report
from chainlab.run.attribute import attribute, plan_waves
from chainlab.run.deadline import signals_interrupt
from chainlab.run.matrix import (Cell, Matrix, apply_expect, cell_of, check_expect_names, compare_with, expect_service,
                                 expect_text, find_previous, parse_expect, write_matrix)
from chainlab.run.outcome import DEFAULT_TABLES, ProbeResult, flows_of
from chainlab.run.probe import ProbeRequest, ProbeSpec, endpoint_names, plan_probe, resolve
from chainlab.run.runner import (EVIDENCE_DIRS, ProbeRun, analyze_logs, capture, check_traced, own_addresses, probe_part,
                                 recorded, unavailable_for, write_evidence, write_probe_text)
from chainlab.rundir import check_runs_root, create_run_dir
from chainlab.trace.pipeline import Analysis
from chainlab.yamlfile import MAX_BYTES

Log = Callable[[str], None]
TABLES = sorted(DEFAULT_TABLES)


def _quiet(line: str) -> None:
    pass


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def check_addresses(inv: Inventory, specs: list[ProbeSpec]) -> None:
    """On a lab built on this machine (local or VMs), an address target must be inside the
    lab (see `Provider.probe_networks`) or the source's own loopback: probes never leave it
    for the machine's real network."""
    inside = provider_for(inv).probe_networks()
    if inside is None:
        return
    for spec in specs:
        address = IPv4Address(spec.target_address)
        if spec.target is None and not address.is_loopback and not any(address in net for net in inside):
            raise InputError([Problem("probe", spec.target_address,
                                      f"is outside the lab ({', '.join(map(str, inside))}, or the source's own"
                                      " 127.0.0.0/8); the probes of a lab built on this machine stay inside it")])


def run_probes(inv: Inventory, state: LabState, requests: Sequence[ProbeRequest], run_dir: Path,
               log: Log = _quiet, not_probed: dict[int, str] | None = None) -> list[tuple[ProbeResult, Analysis]]:
    """All `requests` at once in one bracketing (in a few, see `plan_waves`, when nft hosts
    are involved: the captures then go to run_dir/waves/N/); each result holds the packets
    that were its, with the analysis of its capture. The caller holds the lab lock. A
    stopped or missing container is the run's error, or (given `not_probed`) the requests it
    takes part in are left out and said there (request index → why)."""
    specs = [plan_probe(r, state) for r in requests]
    check_addresses(inv, specs)
    waves = plan_waves(specs, {h for h, s in state.hosts.items() if s.trace_backend == "nft-monitor"})
    out: list[tuple[ProbeResult, Analysis] | None] = [None] * len(specs)
    runs: list[ProbeRun | None] = [None] * len(specs)
    unavailable: dict[tuple[str, str], str] | None = None if not_probed is None else {}

    def probed(indices: list[int]) -> list[int]:
        """Those of `indices` whose probes the capture ran (its snapshot fills `unavailable`)."""
        return [i for i in indices if unavailable is None or unavailable_for(specs[i], unavailable) is None]

    def ready(indices: list[int]) -> Callable[[dict[str, str]], bool]:
        """All in once every host that ran one of the probes has new log lines."""
        return lambda slices: all(slices.get(specs[i].host) for i in probed(indices))

    for k, whole in enumerate(waves, 1):
        directory = run_dir if len(waves) == 1 else run_dir / "waves" / str(k)
        captured = capture(inv, state, [specs[i] for i in whole], directory, ready(whole), log, unavailable=unavailable)
        if unavailable and not_probed is not None:
            not_probed.update({i: why for i in whole if (why := unavailable_for(specs[i], unavailable)) is not None})
        wave = probed(whole)
        mine = [specs[i] for i in wave]
        analysis = analyze_logs(directory)
        addresses = own_addresses(state, directory)
        for i, run, packets in zip(wave, captured.probes, attribute(analysis.packets, mine, addresses)):
            runs[i] = run
            out[i] = (ProbeResult(specs[i], run.exit_code, run.output, packets, flows_of(packets, specs[i].protocol),
                                  directory), analysis)
    if len(waves) > 1:  # each wave's capture wrote its own
        write_probe_text(run_dir / "probe.txt", [(spec, run) for spec, run in zip(specs, runs) if run is not None])
    return [x for x in out if x is not None]


def _run_info(result: ProbeResult, probe: dict[str, object], lab: str, started: datetime,
              duration_s: float) -> dict[str, object]:
    """`probe`: the run info's probe block (`probe_part`)."""
    return {
        "kind": "probe",
        "scenario": {"id": "probe", "title": result.label, "description": "",
                     "outcome": "", "tables": TABLES},
        "title": f"probe {result.label}",
        "started": started.isoformat(timespec="seconds"), "duration_s": round(duration_s, 3),
        "passed": result.reached, "outcome": "reachable" if result.reached else "unreachable",
        "decision": result.decision, "lab": lab,
        "probe": probe,
    }


def _write_result(result: ProbeResult, analysis: Analysis, directory: Path, lab: str, started: datetime,
                  duration_s: float) -> None:
    part, probe = probe_part(analysis, result.spec, result.exit_code, result.packets, result.flows)
    write_evidence(directory, part, _run_info(result, probe, lab, started, duration_s), TABLES)


def probe(inv: Inventory, request: ProbeRequest, runs_root: Path, log: Log = _quiet) -> ProbeResult:
    """One probe with the evidence of a scenario run in runs/<lab>-<time>-probe-<src>-<dst>-<service>/.

    Bad input, a busy lab or a runs dir that cannot take the evidence fail before a run
    dir exists; a failure after that is a RunFailed (see `runner.recorded`)."""
    check_traced(inv, request.port, "probe port")
    state = load_state(inv)
    check_addresses(inv, [plan_probe(request, state)])
    check_runs_root(runs_root)
    with signals_interrupt(), lab_lock(inv):
        started = datetime.now()
        run_dir = create_run_dir(runs_root, inv.lab, "-" + _slug(f"probe-{request.source}-{request.target}-{request.service}"))
        with recorded(run_dir, log):
            [(result, analysis)] = run_probes(inv, state, [request], run_dir, log)
            _write_result(result, analysis, run_dir, inv.lab, started, (datetime.now() - started).total_seconds())
    return result


def endpoints(state: LabState, names: Sequence[str] | None, option: str) -> list[str]:
    """`names` (of `option`, e.g. `--from`) checked against the lab (default: every host,
    then every container)."""
    if not names:
        return endpoint_names(state)
    for name in names:
        try:
            resolve(state, name)
        except InputError as exc:
            raise InputError([replace(p, file=f"matrix {option}") for p in exc.problems]) from None
    return list(dict.fromkeys(names))


def matrix(inv: Inventory, runs_root: Path, sources: Sequence[str] | None = None,
           targets: Sequence[str] | None = None, protocol: str = "icmp", port: int | None = None,
           expect: Path | None = None, log: Log = _quiet) -> Matrix:
    """Every source × target (not itself) probed at once; matrix.json and matrix.html in
    runs/<lab>-<time>-matrix-<service>/, each cell's evidence in cells/<source>--<target>/
    (failures as for `probe`)."""
    check_traced(inv, port, "matrix --proto port")
    state = load_state(inv)
    froms, tos = endpoints(state, sources, "--from"), endpoints(state, targets, "--to")
    requests = [ProbeRequest(s, t, protocol, port) for s in froms for t in tos if s != t]  # type: ignore[arg-type]
    if not requests:
        raise InputError([Problem("matrix", "", "no pair to probe: give at least one source and another target")])
    expected = None
    if expect is not None:
        text = read_regular_file(expect, MAX_BYTES).decode("utf-8", "replace")
        expected = parse_expect(text, str(expect))
        check_expect_names(expected, str(expect), set(endpoint_names(state)), inv.lab)
        named = expect_service(text)
        if named is not None and named != requests[0].service:
            log(f"note: {expect}'s corner names {named}; this matrix probes {requests[0].service}")
    check_runs_root(runs_root)
    with signals_interrupt(), lab_lock(inv):
        started = datetime.now()
        service = requests[0].service
        run_dir = create_run_dir(runs_root, inv.lab, "-" + _slug(f"matrix-{service}"))
        with recorded(run_dir, log):
            log(f"{_count(len(requests), 'probe')} ({service}) from {_count(len(froms), 'source')} to"
                f" {_count(len(tos), 'target')}")
            not_probed: dict[int, str] = {}
            try:
                done = run_probes(inv, state, requests, run_dir, log, not_probed)
            except ChainlabError as exc:
                raise ChainlabError(f"{exc} (leave an endpoint that cannot be probed out with --from/--to)") from exc
            duration = (datetime.now() - started).total_seconds()
            waves = len({result.run_dir for result, _ in done}) or 1  # before the cells take run_dir over
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                reports = list(pool.map(lambda item: _write_cell(item[0], item[1], run_dir, inv.lab, started, duration), done))
            cells = [cell_of(r, link) for (r, _), link in zip(done, reports)]
            cells += [Cell(requests[i].source, requests[i].target, False, f"not probed: {why}", probed=False)
                      for i, why in sorted(not_probed.items())]
            grid = Matrix(inv.lab, service, froms, tos, cells, started.isoformat(timespec="seconds"),
                          round(duration, 3), run_dir.name, waves=waves)
            previous, grid.skipped_partial = find_previous(runs_root, run_dir, grid)
            compare_with(grid, previous)
            if expected is not None:
                apply_expect(grid, expected, str(expect))
            write_matrix(run_dir, grid)
            write_atomic(run_dir / "expect.txt", expect_text(grid))
            render_matrix_report(run_dir, grid)
    return grid


def _write_cell(result: ProbeResult, analysis: Analysis, run_dir: Path, lab: str, started: datetime,
                duration: float) -> str:
    """cells/<source>--<target>/: links to its capture's evidence, its probe.txt and report."""
    directory = private_dir(run_dir / "cells" / f"{result.spec.request.source}--{result.spec.request.target}")
    assert result.run_dir is not None
    for sub in EVIDENCE_DIRS:
        os.symlink(os.path.relpath(result.run_dir / sub, directory), directory / sub)
    write_probe_text(directory / "probe.txt", [(result.spec, ProbeRun(result.exit_code, result.output))])
    result.run_dir = directory
    _write_result(result, analysis, directory, lab, started, duration)
    return (directory / "report.html").relative_to(run_dir).as_posix()


class Lab:
    """A provisioned lab, driven from Python (the pytest plugin's `lab` fixture is one).

    `Lab("lab/local.yaml").probe("slave1", "web1").dropped_at(node="master", chain="cali-tw-*")`
    """

    def __init__(self, inventory: Inventory | Path | str, runs: Path | str = "runs", log: Log = _quiet):
        self.inventory = inventory if isinstance(inventory, Inventory) else load_inventory(Path(inventory))
        self.runs = Path(runs)
        self.log = log

    def probe(self, source: str, target: str, *, tcp: int | None = None, udp: int | None = None,
              count: int = 1) -> ProbeResult:
        """ICMP echo by default; `tcp=PORT` or `udp=PORT` for a connection or a datagram."""
        return probe(self.inventory, probe_request(source, target, tcp, udp, count), self.runs, self.log)

    def matrix(self, sources: Sequence[str] | None = None, targets: Sequence[str] | None = None, *,
               tcp: int | None = None, udp: int | None = None, expect: Path | None = None) -> Matrix:
        protocol, port = _service(tcp, udp)
        return matrix(self.inventory, self.runs, sources, targets, protocol, port, expect, self.log)

    def __repr__(self) -> str:
        return f"<Lab {self.inventory.lab}>"


def _service(tcp: int | None, udp: int | None) -> tuple[str, int | None]:
    if tcp is not None and udp is not None:
        raise InputError([Problem("probe", "", "give tcp= or udp=, not both")])
    return ("tcp", tcp) if tcp is not None else ("udp", udp) if udp is not None else ("icmp", None)


def probe_request(source: str, target: str, tcp: int | None, udp: int | None, count: int) -> ProbeRequest:
    protocol, port = _service(tcp, udp)
    return ProbeRequest(source, target, protocol, port, count)  # type: ignore[arg-type]
