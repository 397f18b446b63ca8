"""Provisioning fixes found on real VMs (issue 14), with a context that answers like a VM."""

from __future__ import annotations

from types import SimpleNamespace

from chainlab.inventory import load_inventory
from chainlab.provision import commands as C
from chainlab.provision import steps
from chainlab.provision.actions import Action
from chainlab.provision.executor import run_step
from chainlab.shell import command_line

from .test_vm_plan import VM_YAML


class VmCtx:
    """Duck-typed HostContext for the rsyslog step: rsyslog configured, the trace file there,
    IPv4's nf_log binding as given. Actions are recorded, not carried out."""

    check = False
    offline = False

    def __init__(self, binding: str) -> None:
        self.inv = load_inventory(VM_YAML)
        self.host = "slave1"
        self.facts = SimpleNamespace(trace_backend="rsyslog", kernel_log="private", init="systemd",
                                     family="debian", os_version="12", has=lambda tool: True)
        self.binding = binding
        self.commands: list[str] = []

    def read(self, argv: list[str]) -> str:
        if argv == steps.NF_LOG_READ:
            return self.binding + "\n"
        return C.rsyslog_text("/var/log/iptables.log")  # the drop-in is already ours

    def probe(self, argv: list[str]) -> bool:
        return True  # the trace file exists

    def perform(self, action: Action) -> str:
        self.commands.append(action.shown())
        return ""


def test_rsyslog_binds_the_kernel_logger_after_a_lab_down_unbound_it() -> None:
    # After lab down restored NONE, the logger module stays loaded and the kernel does not
    # bind it again: seen on a VM, scenario 7 then had no TRACE line from slave1.
    ctx = VmCtx("NONE")
    assert run_step(ctx, "trace_log", steps.trace_log).status == "changed"
    assert ctx.commands == [command_line(C.nf_log_remember_argv()), command_line(C.nf_log_kernel_bind_argv())]
    assert "echo nf_log_ipv4 > /proc/sys/net/netfilter/nf_log/2" in ctx.commands[1]


def test_rsyslog_leaves_a_bound_kernel_logger_alone() -> None:
    ctx = VmCtx("nf_log_ipv4")
    assert run_step(ctx, "trace_log", steps.trace_log).status == "ok" and ctx.commands == []


def test_no_log_or_trace_rule_is_checked_before_the_bindings_are_remembered() -> None:
    # `iptables -C ... -j LOG` loads the logger module, which binds nf_log_ipv4 by itself: among
    # the prefetched probes it made lab up remember the binding it had just caused, and lab
    # down left nf_log bound (seen on a fresh VM).
    from chainlab.networks import network_for
    from chainlab.providers import provider_for
    from chainlab.provision.context import RunContext

    inv = load_inventory(VM_YAML)
    provider = provider_for(inv)
    run = RunContext(inv, provider, network_for(inv, provider), check=True)
    probes = [command_line(argv) for argv in steps.up_probes(run, "slave1")]
    assert command_line(steps.NF_LOG_READ) in probes
    assert not any(" -C " in probe and ("-j LOG" in probe or "-j TRACE" in probe) for probe in probes)


def test_every_nf_log_family_is_remembered() -> None:
    # The logger module binds IPv4, ARP, netdev, bridge and IPv6 at once: lab down must put
    # back each (seen on a fresh VM: nf_log.3 stayed nf_log_arp).
    script = C.nf_log_remember_argv()[2]
    assert "/proc/sys/net/netfilter/nf_log/*" in script
    before = "\n".join(f"{n}=NONE" for n in range(13))
    assert C.parse_nf_log(before) == {n: "NONE" for n in range(13)}
    restore = C.nf_log_restore_argv(C.parse_nf_log(before))[2]
    assert all(f"echo NONE > /proc/sys/net/netfilter/nf_log/{n}" in restore for n in range(13))
