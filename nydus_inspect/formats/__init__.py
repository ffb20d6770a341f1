"""Sans-I/O codecs for every nydus on-disk structure: bytes in, dataclasses out, and back."""
