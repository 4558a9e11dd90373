"""What the virtual DUT prints, written out independently of its firmware, for byte-exact checks."""


def golden_log(n: int) -> bytes:
    """What `log n` prints: numbered heartbeat lines, cut at exactly n bytes."""
    out, i = bytearray(), 0
    while len(out) < n:
        i += 1
        out += f"log {i:08d} sensor-node heartbeat lorem ipsum dolor sit amet\r\n".encode()
    return bytes(out[:n])
