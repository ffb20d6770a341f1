"""``security.capability``: the kernel's file capabilities (``struct vfs_cap_data`` / ``vfs_ns_cap_data``).

Little-endian ``magic_etc`` (revision in the top byte, bit 0 = effective), then one (revision 1) or two
(revisions 2 and 3) pairs of 32-bit permitted and inheritable masks; revision 3 adds the ``rootid`` of a
user namespace. :func:`to_text` writes the set as ``getcap`` prints it, so a layer's capabilities read
as an admin knows them (``cap_net_bind_service=ep``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import FormatError

REVISION_MASK = 0xFF000000
FLAGS_EFFECTIVE = 0x000001
REVISION_1 = 0x01000000  # 32 capabilities
REVISION_2 = 0x02000000  # 64 capabilities
REVISION_3 = 0x03000000  # 64 capabilities and the namespace's root uid
SIZES = {REVISION_1: 12, REVISION_2: 20, REVISION_3: 24}

#: Capability names by number (linux/capability.h); a higher number prints as the number, as libcap does.
NAMES = (
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
)

# Flag bits of one capability, and the letters getcap writes for them (always in the order e, i, p).
_E, _P, _I = 1, 2, 4
_LETTERS = ((_E, "e"), (_I, "i"), (_P, "p"))


@dataclass(frozen=True)
class FileCaps:
    revision: int
    effective: bool
    permitted: int
    inheritable: int
    rootid: int | None = None


def parse(value: bytes) -> FileCaps:
    """Decode a ``security.capability`` value; FormatError when it is no revision the kernel writes."""
    if len(value) < 4:
        raise FormatError("security.capability", "shorter than its magic_etc field", value=len(value))
    (magic,) = struct.unpack_from("<I", value)
    revision = magic & REVISION_MASK
    size = SIZES.get(revision)
    if size is None:
        raise FormatError("security.capability", "unknown revision", field="magic_etc", offset=0, value=magic)
    if len(value) != size:
        raise FormatError(
            "security.capability", f"revision {revision >> 24} holds {size} bytes", value=len(value)
        )
    words = struct.unpack_from(f"<{(size - 4) // 4}I", value, 4)
    permitted, inheritable = words[0], words[1]
    if revision != REVISION_1:
        permitted |= words[2] << 32
        inheritable |= words[3] << 32
    return FileCaps(
        revision >> 24,
        bool(magic & FLAGS_EFFECTIVE),
        permitted,
        inheritable,
        words[4] if revision == REVISION_3 else None,
    )


def _letters(flags: int) -> str:
    return "".join(ch for bit, ch in _LETTERS if flags & bit)


def to_text(caps: FileCaps) -> str:
    """The capability set as ``getcap`` prints it.

    The flag combination most capabilities share is written first as ``=FLAGS`` (``=ep`` means every
    capability, and an empty one is left out); each other combination follows with its capabilities in
    number order, combinations with more flags first, written as what to add to and take from that base
    (``+i-p``). With an empty base the first of them is an assignment (``cap_kill=ip cap_chown+i``).
    """
    top = max(caps.permitted.bit_length(), caps.inheritable.bit_length())
    count = max(len(NAMES), top)
    eff = _E if caps.effective else 0
    flags = [
        (eff if (caps.permitted | caps.inheritable) >> n & 1 else 0)
        | (_P if caps.permitted >> n & 1 else 0)
        | (_I if caps.inheritable >> n & 1 else 0)
        for n in range(count)
    ]
    histogram = [flags.count(t) for t in range(8)]
    # The most common combination; on a tie the one with fewer flags, so that "nothing" wins over a
    # set that only some capabilities share.
    base = max(range(8), key=lambda t: (histogram[t], -t))
    parts = [f"={_letters(base)}"] if base else []
    for t in range(7, -1, -1):
        if t == base or not histogram[t]:
            continue
        names = ",".join(NAMES[n] if n < len(NAMES) else str(n) for n in range(count) if flags[n] == t)
        if not base and not parts:
            parts.append(f"{names}={_letters(t)}")
            continue
        add, drop = _letters(t & ~base), _letters(base & ~t)
        parts.append(names + (f"+{add}" if add else "") + (f"-{drop}" if drop else ""))
    text = " ".join(parts) or "="
    if caps.rootid is not None:
        text += f" [rootid={caps.rootid}]"
    return text


def describe(value: bytes) -> str | None:
    """``getcap``'s text for a ``security.capability`` value, or None when it does not decode."""
    try:
        return to_text(parse(value))
    except FormatError:
        return None
