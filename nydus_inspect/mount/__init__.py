"""Mount nydus layers with FUSE: ``nydus-inspect mount LAYER... MOUNTPOINT``.

The mount shows two trees::

    MOUNTPOINT/entries/<blob file>/   one file per ToC entry (decompressed), raw/ (stored bytes), JSON sidecars
    MOUNTPOINT/rootfs/                the layer's (or the merged layers') file tree, data read lazily by chunk

Modules: :mod:`.sources` opens what the user gave (layers, bootstraps, blob files) and merges several layers
in memory; :mod:`.entries` builds the ``entries/`` tree (no FUSE); :mod:`.fs` is the ``pyfuse3.Operations``
over both; :mod:`.daemon` mounts, daemonizes, signals readiness and unmounts; :mod:`.cli` adds the ``mount``
and ``umount`` commands. pyfuse3 and trio are imported only by :mod:`.fs` and :mod:`.daemon`, which the
commands load when they run.
"""

from __future__ import annotations
