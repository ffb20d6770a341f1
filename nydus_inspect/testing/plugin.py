"""pytest plugin (entry point ``pytest11``): fixtures to build and open nydus layers in users' tests.

Fixtures:
- ``nydus_pack(spec_or_dir, **pack_options) -> Path``: a nydus layer blob built in a temporary directory.
- ``nydus_layer(path, **open_options) -> Layer``: an opened layer, closed after the test.
Assertion helpers live in :mod:`nydus_inspect.testing`.
"""

from __future__ import annotations

import pytest

from . import build_layer


@pytest.fixture
def nydus_pack(tmp_path_factory):
    counter = [0]

    def make(spec, **pack_options):
        counter[0] += 1
        out = tmp_path_factory.mktemp("nydus-layer") / f"layer-{counter[0]}.blob"
        return build_layer(spec, out, **pack_options)

    return make


@pytest.fixture
def nydus_layer():
    from ..layer import open_layer

    opened = []

    def open_(path, **options):
        layer = open_layer(str(path), **options)
        opened.append(layer)
        return layer

    yield open_
    for layer in opened:
        layer.close()
