"""Strict patterns for names that end up in remote commands, and what each allows in words.

Plain regular expressions, without pydantic (names.py makes its types of them): a command
that only checks a name, as `analyze NODE=FILE` does, does not pay for importing pydantic.
"""

from __future__ import annotations

HOST_NAME = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$"
CONTAINER_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"
NETWORK_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"
IMAGE_NAME = r"^[a-z0-9][a-z0-9._/-]{0,127}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
USER_NAME = r"^[a-z_][a-z0-9_-]{0,31}$"
ABS_PATH = r"^(/|~/)[A-Za-z0-9_./-]*$"

# What each pattern allows, in words: error messages say this, never the raw regex.
PATTERN_HELP = {
    HOST_NAME: "a host name: 1-32 lowercase letters, digits and '-', starting with a letter, not ending with '-'",
    # CONTAINER_NAME and NETWORK_NAME are the same pattern, hence one entry for both.
    CONTAINER_NAME: "a name of 1-63 letters, digits, '_', '.' and '-', starting with a letter or digit",
    IMAGE_NAME: (
        "an image name: lowercase letters, digits, '.', '_', '/' and '-' (starting with a letter or digit),"
        " optionally ':TAG' with letters, digits, '_', '.' and '-'"
    ),
    USER_NAME: "a user name: 1-32 lowercase letters, digits, '_' and '-', starting with a letter or '_'",
    ABS_PATH: "a path starting with '/' or '~/', made of letters, digits, '_', '.', '/' and '-' (no spaces)",
}
