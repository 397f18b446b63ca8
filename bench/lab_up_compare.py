"""Warm `lab up` against pyinfra and Ansible doing the same checks, and at 3 vs 30 hosts.

On a private local lab (lab `upcmp`, lan 10.231.87.0/24), provisioned once: then, interleaved
for ROUNDS rounds, the warm (idempotent) `chainlab lab up`, a pyinfra deploy and an Ansible
playbook (bench/compare/) that check what that lab up checks (spec.py builds the list from
chainlab's own probes), each as a user runs it from the shell. pyinfra and ansible-core live
in their own venv (.venv-bench: they pin other paramiko versions). Then a 30-host lab
(`up30`, 10.231.88.0/24, same containers): warm lab up at 30 hosts (median of ROUNDS runs) against 3.

Prints figures, never pass/fail; exit 1 only if a run itself failed. Needs root.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from benchlab import (ROOT, CpuRun, background_cpu, private_lab, settle, timed, timed_argv, timed_cpu,
                      wait_for_server, warm_server)

sys.path.insert(0, str(Path(__file__).resolve().parent / "compare"))
from spec import write as write_spec  # noqa: E402

from chainlab.inventory import load_inventory  # noqa: E402

ROUNDS = 7
MANY = 30  # hosts of the larger lab
BENCH_VENV = ROOT / ".venv-bench" / "bin"
COMPARE = Path(__file__).resolve().parent / "compare"
ANSIBLE_CFG = """[defaults]
host_key_checking = True
forks = 50
stdout_callback = default
[ssh_connection]
pipelining = True
ssh_args = -F {config} -o ControlMaster=auto -o ControlPersist=60s
control_path_dir = {tmp}/cp
"""


def _pyinfra_inventory(spec: dict, path: Path) -> None:
    hosts = [(name, {"ssh_hostname": h["address"], "ssh_user": "root", "ssh_key": spec["key"],
                     "ssh_known_hosts_file": spec["known_hosts"], "ssh_strict_host_key_checking": "yes"})
             for name, h in spec["hosts"].items()]
    path.write_text(f"lab = {hosts!r}\n")


def _ansible_inventory(spec: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump({"lab": {"hosts": {n: {"ansible_host": h["address"], "ansible_user": "root"}
                                                      for n, h in spec["hosts"].items()}}}))


def _thirty_hosts(directory: Path) -> Path:
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["lab"] = "up30"
    doc["local"] = {"lan": "10.231.88.1/24", "state_dir": str(directory / "state")}
    first = next(iter(doc["hosts"].values()))
    doc["hosts"] = {("master" if i == 1 else f"node{i:02d}"): {**first, "address": f"10.231.88.{100 + i}",
                                                                "roles": ["master", "etcd"] if i == 1 else ["worker"]}
                    for i in range(1, MANY + 1)}
    doc["containers"] = {"web1": {"host": "master"}, "web2": {"host": "master"}, "web3": {"host": "node02"}}
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def compare(tmp: Path, served: dict[str, str]) -> tuple[dict[str, list[float]], list[CpuRun], int]:
    """Each tool's warm runs' wall times, chainlab's plain runs with their CPU, and the lab's hosts."""
    times: dict[str, list[float]] = {"chainlab": [], "chainlab-warm": [], "pyinfra": [], "ansible": []}
    cpu: list[CpuRun] = []
    with private_lab(tmp, "upcmp", "10.231.87") as inv_path:
        timed(inv_path, "local", "up")
        timed(inv_path, "lab", "up")
        spec_path = tmp / "spec.json"
        spec = write_spec(load_inventory(inv_path), spec_path)
        _pyinfra_inventory(spec, tmp / "pyinfra_inventory.py")
        _ansible_inventory(spec, tmp / "ansible_inventory.yml")
        (tmp / "cp").mkdir()
        (tmp / "ansible.cfg").write_text(ANSIBLE_CFG.format(config=spec["ssh_config"], tmp=tmp))
        os.environ.update(SPEC=str(spec_path), ANSIBLE_CONFIG=str(tmp / "ansible.cfg"))
        pyinfra = [str(BENCH_VENV / "pyinfra"), "-y", str(tmp / "pyinfra_inventory.py"),
                   str(COMPARE / "deploy.py")]
        ansible = [str(BENCH_VENV / "ansible-playbook"), "-i", str(tmp / "ansible_inventory.yml"),
                   "-e", f"spec_file={spec_path}", str(COMPARE / "playbook.yml")]
        timed_argv(pyinfra)  # warm up: pyinfra's first run compiles, Ansible opens its control sockets
        timed_argv(ansible)
        timed(inv_path, "lab", "up", env=served)  # and chainlab's warm server starts
        wait_for_server(served)
        print(f"(waited {settle():.0f} s for the machine to settle after the lab came up)", file=sys.stderr)
        background = background_cpu()
        for _ in range(ROUNDS):
            run = timed_cpu(inv_path, "lab", "up", background=background)
            times["chainlab"].append(run.wall)
            cpu.append(run)
            times["chainlab-warm"].append(timed(inv_path, "lab", "up", env=served))
            times["pyinfra"].append(timed_argv(pyinfra))
            times["ansible"].append(timed_argv(ansible))
        timed(inv_path, "lab", "down")
    return times, cpu, len(spec["hosts"])


def thirty(tmp: Path, served: dict[str, str]) -> tuple[float, float, float, float, list[CpuRun]]:
    """local up's time, the first lab up's and the warm lab up's at 30 hosts, without and
    with the warm server, and the plain warm runs with their CPU."""
    inv_path = _thirty_hosts(tmp)
    try:
        local = timed(inv_path, "local", "up")
        cold = timed(inv_path, "lab", "up")
        print(f"(waited {settle():.0f} s for the 30-host lab to settle)", file=sys.stderr)
        plain: list[float] = []
        warm: list[float] = []
        cpu: list[CpuRun] = []
        background = background_cpu()
        for _ in range(ROUNDS):
            run = timed_cpu(inv_path, "lab", "up", background=background)
            plain.append(run.wall)
            cpu.append(run)
            warm.append(timed(inv_path, "lab", "up", env=served))
        timed(inv_path, "lab", "down")
    finally:
        timed_argv([str(Path(sys.executable).parent / "chainlab"), "-i", str(inv_path), "local", "down"])
    return local, cold, statistics.median(plain), statistics.median(warm), cpu


def _cpu_medians(runs: list[CpuRun]) -> dict[str, float]:
    return {part: statistics.median(getattr(run, part) for run in runs) for part in ("machine", "client", "others")}


def main() -> int:
    if not (BENCH_VENV / "pyinfra").exists():
        print(f"pyinfra and ansible-core are not installed in {BENCH_VENV.parent}: run `make bench`", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="cw") as runtime, warm_server(Path(runtime)) as served:
            with tempfile.TemporaryDirectory(prefix="chainlab-upcmp-") as tmp:
                times, cpu3_runs, few = compare(Path(tmp), served)
            with tempfile.TemporaryDirectory(prefix="chainlab-up30-") as tmp:
                local30, cold30, plain30, warm30, cpu30_runs = thirty(Path(tmp), served)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    med = {tool: statistics.median(values) for tool, values in times.items()}
    load = os.getloadavg()[0]
    print(f"warm lab up vs the same checks in pyinfra and Ansible (3-host local lab, median of {ROUNDS},"
          f" interleaved; load {load:.1f}); chainlab-warm: with its warm server (CHAINLAB_PERSIST),"
          " as Ansible runs with ControlPersist")
    for tool, value in med.items():
        print(f"  {tool:13s} {value:6.2f} s   (runs: {', '.join(f'{v:.2f}' for v in times[tool])})")
    for tool in ("chainlab", "chainlab-warm"):
        print(f"  {tool}/pyinfra: {med[tool] / med['pyinfra']:.2f}x (target <= 0.40x:"
              f" {'met' if med[tool] <= 0.4 * med['pyinfra'] else 'NOT met'})")
        print(f"  {tool}/ansible: {med[tool] / med['ansible']:.3f}x (target <= 0.05x:"
              f" {'met' if med[tool] <= 0.05 * med['ansible'] else 'NOT met'})")
    print(f"30 hosts (local lab of 30 namespaces, same 3 containers; warm: median of {ROUNDS})")
    print(f"  local up {local30:.1f} s, first lab up {cold30:.1f} s, warm lab up {plain30:.2f} s,"
          f" with the warm server {warm30:.2f} s")
    for tool, at30 in (("chainlab", plain30), ("chainlab-warm", warm30)):
        print(f"  {tool}: warm at 30 / warm at 3: {at30 / med[tool]:.2f}x (target <= 2x:"
              f" {'met' if at30 <= 2 * med[tool] else 'NOT met'})")
    cpu3, cpu30 = _cpu_medians(cpu3_runs), _cpu_medians(cpu30_runs)
    extra, cores = MANY - few, os.cpu_count() or 1
    per_host = {part: (cpu30[part] - cpu3[part]) / extra for part in cpu3}
    print(f"  the machine's CPU of a warm lab up (every process: the hosts' sshd and shells run here too; the idle"
          f" lab's own use taken out): {few} hosts {cpu3['machine']:.2f} s, {MANY} hosts {cpu30['machine']:.2f} s:"
          f" {1000 * per_host['machine']:.1f} ms per host beyond the first {few}, on {cores} cores; of it chainlab's"
          f" own process {1000 * per_host['client']:.1f} ms, the hosts' processes {1000 * per_host['others']:.1f} ms")
    floor = med["chainlab"] + per_host["others"] * extra / cores
    print(f"  the hosts' own share alone, spread evenly on {cores} cores, adds {floor - med['chainlab']:.2f} s to the"
          f" {few}-host run: ~{floor:.2f} s = {floor / med['chainlab']:.2f}x at {MANY} hosts, with a chainlab that took"
          " no CPU of its own")
    print(json.dumps({"warm_s": med, "warm30_s": plain30, "warm30_server_s": warm30, "cpu3_s": cpu3, "cpu30_s": cpu30,
                      "cpu_per_host_ms": {part: 1000 * value for part, value in per_host.items()},
                      "floor30_s": floor, "load": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
