"""A warm server (opt-in, CHAINLAB_PERSIST=SECONDS): the imports done once, each command forked.

Python's start and chainlab's imports (pydantic, paramiko, fabric, rich, urllib3) take
~0.3-0.4 s of a 0.6 s warm `lab up`. With CHAINLAB_PERSIST set, the `chainlab` command
(client.py, which imports almost nothing) hands its command line, working directory,
environment and standard streams to a server (server.py) that imported everything once and
forks a child per command; the child runs the command on the caller's own terminal or pipes
and the client exits with its status. The server ends after SECONDS without a command, or as
soon as chainlab's code or its CHAINLAB_/PYTHON environment differs from what it started with.
Like Ansible's ControlPersist, it is a cache: without it every command runs as before.
"""
