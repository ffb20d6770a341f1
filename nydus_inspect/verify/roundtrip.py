"""Check ``roundtrip``: the layer's tree equals the source tar's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FormatError, NydusInspectError
from .findings import Finding, _exc_finding, _short

if TYPE_CHECKING:
    from .run import _Run


# ---------------------------------------------------------------------------- round trip
def _check_roundtrip(run: _Run, source: str) -> None:
    from ..diff import LayerEntries, TarEntries, compare, layer_hardlinks

    run.tick("roundtrip", 0, 2)
    try:
        expected = TarEntries(source, layer_hardlinks(run.layer))
    except NydusInspectError as exc:
        run.add(_exc_finding("roundtrip", exc, file=source))
        return
    run.tick("roundtrip", 1, 2)
    # The layer's side is read as it is compared, never held: an entry that does not read back ends the
    # comparison with the differences found before it.
    try:
        for d in compare(expected, LayerEntries(run.layer)):
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
    run.count("roundtrip entries", len(expected))
    run.tick("roundtrip", 2, 2)
