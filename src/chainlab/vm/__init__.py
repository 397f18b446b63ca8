"""The VM lab (`provider: qemu`): the inventory's hosts as qemu VMs on this machine.

`plan` (pure: names, addresses, qemu and seed texts), `recipe` (pure: the image's packages
and cache key), `image` (build and cache), `accel` (KVM or TCG), `network` (namespace,
bridge, taps, management link, route rule), `lab` (up, down, status). Import the modules
themselves: this package imports nothing, so `chainlab.remote` can use `plan` and
`network` without a cycle.
"""
