"""Check ``roundtrip``: the layer's tree equals the source tar's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FormatError, NydusInspectError
from .findings import Finding, _exc_finding, _short

if TYPE_CHECKING:
    from .run import _Run


# ---------------------------------------------------------------------------- round trip
def _check_roundtrip(run: _Run, source: str) -> None:
    from ..diff import compare, describe_layer, describe_tar, layer_hardlinks

    run.tick("roundtrip", 0, 2)
    try:
        expected = describe_tar(source, layer_hardlinks(run.layer))
    except NydusInspectError as exc:
        run.add(_exc_finding("roundtrip", exc, file=source))
        return
    run.tick("roundtrip", 1, 2)
    try:
        found = describe_layer(run.layer)
    except NydusInspectError as exc:
        detail = exc.detail if isinstance(exc, FormatError) else str(exc)
        run.add(
            Finding(
                "roundtrip",
                f"the layer's tree does not read back: {detail}",
                structure=getattr(exc, "structure", None),
                file=run.layer.path,
                offset=getattr(exc, "offset", None),
            )
        )
        return
    n = 0
    for d in compare(expected, found):
        j = d.to_json()
        run.add(
            Finding(
                "roundtrip",
                f"{d.field} differs from the source tar",
                path=j["path"],
                field=d.field,
                file=run.layer.path,
                expected=_short(j["expected"]),
                found=_short(j["found"]),
            )
        )
        n += 1
    run.count("roundtrip entries", len(expected.entries))
    run.tick("roundtrip", 2, 2)
